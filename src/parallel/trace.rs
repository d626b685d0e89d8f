//! A pipeline run's timeline, two ways: Chrome's trace-event JSON (opens in Perfetto and
//! chrome://tracing: one row per stage, a slice per forward or backward) and an SVG of one step
//! with stages as rows and micro-batches as numbered boxes, the picture the course draws.

use super::pipeline::Event;
use super::schedule::Action;
use serde_json::json;

/// Trace-event JSON of every event: complete events ("ph": "X") in microseconds, one thread per
/// stage, named by `stage_names`.
pub fn chrome_trace(events: &[Event], stage_names: &[String]) -> serde_json::Value {
    let mut out: Vec<serde_json::Value> = stage_names
        .iter()
        .enumerate()
        .map(|(s, name)| {
            json!({"name": "thread_name", "ph": "M", "pid": 1, "tid": s,
                   "args": {"name": format!("stage {s}: {name}")}})
        })
        .collect();
    for e in events {
        let (name, cat) = match e.action {
            Action::Forward(j) => (format!("F{j}"), "forward"),
            Action::Backward(j) => (format!("B{j}"), "backward"),
        };
        out.push(json!({
            "name": name, "cat": cat, "ph": "X", "pid": 1, "tid": e.stage,
            "ts": e.start_ms * 1e3, "dur": (e.end_ms - e.start_ms) * 1e3,
            "args": {"step": e.step, "micro_batch": e.action.micro_batch()},
        }));
    }
    json!({"traceEvents": out, "displayTimeUnit": "ms"})
}

/// An SVG of `step`'s events: a row per stage, forward boxes blue and backward green, each
/// numbered with its micro-batch; time runs left to right from the step's first start.
pub fn svg(events: &[Event], step: u64, stages: usize, title: &str) -> String {
    let evs: Vec<&Event> = events.iter().filter(|e| e.step == step).collect();
    let t0 = evs.iter().map(|e| e.start_ms).fold(f64::INFINITY, f64::min);
    let t1 = evs
        .iter()
        .map(|e| e.end_ms)
        .fold(f64::NEG_INFINITY, f64::max);
    let (left, width, row, top) = (80.0, 960.0, 34.0, 40.0);
    let x = |t: f64| left + (t - t0) / (t1 - t0).max(1e-9) * width;
    let height = top + row * stages as f64 + 40.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"22\" font-size=\"14\">{}</text>\n",
        left + width + 20.0,
        escape(title)
    );
    for st in 0..stages {
        let y = top + row * st as f64;
        s += &format!(
            "<text x=\"8\" y=\"{}\">stage {st}</text>\n<rect x=\"{left}\" y=\"{}\" width=\"{width}\" \
             height=\"{}\" fill=\"#f2f2f2\"/>\n",
            y + row * 0.62,
            y + 3.0,
            row - 6.0
        );
    }
    for e in &evs {
        let y = top + row * e.stage as f64;
        let (a, b) = (x(e.start_ms), x(e.end_ms));
        let (fill, label) = match e.action {
            Action::Forward(j) => ("#4c78a8", j),
            Action::Backward(j) => ("#59a14f", j),
        };
        s += &format!(
            "<rect x=\"{a:.1}\" y=\"{}\" width=\"{:.1}\" height=\"{}\" fill=\"{fill}\" \
             stroke=\"white\" stroke-width=\"1\"/>\n",
            y + 3.0,
            (b - a).max(0.5),
            row - 6.0
        );
        if b - a > 12.0 {
            s += &format!(
                "<text x=\"{:.1}\" y=\"{}\" fill=\"white\" text-anchor=\"middle\">{label}</text>\n",
                (a + b) / 2.0,
                y + row * 0.62
            );
        }
    }
    let axis = top + row * stages as f64 + 18.0;
    s += &format!(
        "<text x=\"{left}\" y=\"{axis}\">0 ms</text>\n<text x=\"{}\" y=\"{axis}\" \
         text-anchor=\"end\">{:.1} ms</text>\n\
         <rect x=\"{}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"#4c78a8\"/><text x=\"{}\" y=\"{}\">forward</text>\n\
         <rect x=\"{}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"#59a14f\"/><text x=\"{}\" y=\"{}\">backward</text>\n</svg>\n",
        left + width,
        t1 - t0,
        left + 300.0,
        axis - 10.0,
        left + 316.0,
        axis,
        left + 400.0,
        axis - 10.0,
        left + 416.0,
        axis,
    );
    s
}

fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
