//! Line charts as self-contained SVG: a few series over a shared x axis, optionally log-scaled y,
//! with axes, ticks and a legend. Enough for loss curves and convergence plots without a
//! font or graphics dependency.

use std::fmt::Write;

pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

const COLORS: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

fn ticks(lo: f64, hi: f64, count: usize) -> Vec<f64> {
    (0..=count)
        .map(|i| lo + (hi - lo) * i as f64 / count as f64)
        .collect()
}

fn label(v: f64) -> String {
    if v != 0.0 && (v.abs() >= 1e4 || v.abs() < 1e-2) {
        format!("{v:.1e}")
    } else {
        format!("{}", (v * 100.0).round() / 100.0)
    }
}

/// An SVG document of `series` (points with non-finite values, or y ≤ 0 on a log axis, are
/// skipped).
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    log_y: bool,
    series: &[Series],
) -> String {
    let (w, h) = (900.0, 540.0);
    let (left, right, top, bottom) = (80.0, 200.0, 40.0, 60.0);
    let ty = |y: f64| if log_y { y.log10() } else { y };
    let usable = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && (!log_y || y > 0.0);
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied().filter(usable))
        .collect();
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in &all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(ty(y));
        y1 = y1.max(ty(y));
    }
    if all.is_empty() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= y0 {
        y1 = y0 + 1.0;
    }
    let px = |x: f64| left + (x - x0) / (x1 - x0) * (w - left - right);
    let py = |y: f64| top + (1.0 - (ty(y) - y0) / (y1 - y0)) * (h - top - bottom);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" font-size="16" text-anchor="middle">{title}</text>"#,
        (left + w - right) / 2.0
    );
    let (bx, by) = (h - bottom, w - right);
    let _ = writeln!(
        s,
        r#"<path d="M{left},{top} V{bx} H{by}" stroke="black" fill="none"/>"#
    );
    for t in ticks(x0, x1, 5) {
        let x = px(t);
        let _ = writeln!(
            s,
            r#"<line x1="{x}" y1="{bx}" x2="{x}" y2="{}" stroke="black"/><text x="{x}" y="{}" text-anchor="middle">{}</text>"#,
            bx + 5.0,
            bx + 20.0,
            label(t)
        );
    }
    for t in ticks(y0, y1, 5) {
        let value = if log_y { 10f64.powf(t) } else { t };
        let y = top + (1.0 - (t - y0) / (y1 - y0)) * (h - top - bottom);
        let _ = writeln!(
            s,
            r##"<line x1="{}" y1="{y}" x2="{by}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
            left,
            left - 6.0,
            y + 4.0,
            label(value)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{x_label}</text>"#,
        (left + w - right) / 2.0,
        h - 15.0
    );
    let _ = writeln!(
        s,
        r#"<text x="20" y="{}" text-anchor="middle" transform="rotate(-90 20 {})">{y_label}{}</text>"#,
        (top + h - bottom) / 2.0,
        (top + h - bottom) / 2.0,
        if log_y { " (log scale)" } else { "" }
    );
    for (i, ser) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<String> = ser
            .points
            .iter()
            .filter(|p| usable(p))
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        if !pts.is_empty() {
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="1.5"/>"#,
                pts.join(" ")
            );
        }
        // sparse series (evaluations) get a marker per point, so one point still shows
        if pts.len() <= 30 {
            for p in &pts {
                let (x, y) = p.split_once(',').expect("x,y");
                let _ = writeln!(s, r#"<circle cx="{x}" cy="{y}" r="3" fill="{color}"/>"#);
            }
        }
        let ly = top + 18.0 * i as f64 + 10.0;
        let _ = writeln!(
            s,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            by + 15.0,
            by + 40.0,
            by + 46.0,
            ly + 4.0,
            ser.name
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_chart_has_a_polyline_per_series_and_skips_unplottable_points() {
        let series = vec![
            super::Series {
                name: "a".into(),
                points: vec![(0.0, 1.0), (1.0, 0.1), (2.0, f64::NAN)],
            },
            super::Series {
                name: "b".into(),
                points: vec![(0.0, 2.0), (2.0, 0.0)],
            },
        ];
        let svg = super::line_chart("t", "x", "y", true, &series);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(!svg.contains("NaN"));
    }
}
