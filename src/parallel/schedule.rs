//! Pipeline schedules: the order in which each stage runs the forwards and backwards of a step's
//! m micro-batches, as data (so it is checked without a device), and a simulator that runs them
//! against their dependencies to give the timeline and the bubble a schedule implies.
//!
//! - `naive`: one micro-batch at a time through all stages (F0 B0 F1 B1 … on every stage):
//!   only one stage ever works.
//! - `gpipe`: every forward, then every backward (F0 … Fm−1, B0 … Bm−1): a bubble of
//!   (p−1)/(m+p−1) of the step, and m micro-batches of activations held on every stage.
//! - `1f1b` (PipeDream-flush): stage s runs min(p−1−s, m) warm-up forwards, then alternates one
//!   forward and one backward, then the remaining backwards: GPipe's bubble, but at most p−s
//!   micro-batches in flight on stage s.
//!
//! Backwards run in micro-batch order on every stage under every schedule, so a stage's
//! gradients accumulate in the order one device's micro-batches do.

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    Naive,
    Gpipe,
    OneFOneB,
}

impl Schedule {
    pub fn parse(s: &str) -> Result<Schedule> {
        match s {
            "naive" => Ok(Schedule::Naive),
            "gpipe" => Ok(Schedule::Gpipe),
            "1f1b" => Ok(Schedule::OneFOneB),
            _ => Err(Error::Config(format!(
                "--schedule must be naive, gpipe or 1f1b, not {s:?}"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Schedule::Naive => "naive",
            Schedule::Gpipe => "gpipe",
            Schedule::OneFOneB => "1f1b",
        }
    }

    /// The idle fraction of a step with equal forward and backward times per stage:
    /// (p−1)/(m+p−1) for GPipe and 1F1B, (p−1)/p for naive (one stage works at a time).
    pub fn ideal_bubble(self, p: usize, m: usize) -> f64 {
        match self {
            Schedule::Naive => (p - 1) as f64 / p as f64,
            _ => (p - 1) as f64 / (m + p - 1) as f64,
        }
    }
}

/// One unit of a stage's work: micro-batch j's forward or backward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Forward(usize),
    Backward(usize),
}

impl Action {
    pub fn micro_batch(self) -> usize {
        match self {
            Action::Forward(j) | Action::Backward(j) => j,
        }
    }
}

/// Stage `s` of `p`'s actions for a step of `m` micro-batches, in the order it runs them.
pub fn actions(schedule: Schedule, p: usize, s: usize, m: usize) -> Vec<Action> {
    assert!(s < p && m > 0, "stage {s} of {p}, {m} micro-batches");
    use Action::*;
    match schedule {
        Schedule::Naive => (0..m).flat_map(|j| [Forward(j), Backward(j)]).collect(),
        Schedule::Gpipe => (0..m).map(Forward).chain((0..m).map(Backward)).collect(),
        Schedule::OneFOneB => {
            let warm = (p - 1 - s).min(m);
            let mut v: Vec<Action> = (0..warm).map(Forward).collect();
            for k in 0..m - warm {
                v.push(Forward(warm + k));
                v.push(Backward(k));
            }
            v.extend((m - warm..m).map(Backward));
            v
        }
    }
}

/// When each action of each stage runs, in a simulation: stage s runs its actions in order,
/// each as soon as the stage is free and its input is ready (a forward needs the same
/// micro-batch's forward on stage s−1, a backward its backward on stage s+1).
#[derive(Clone, Debug)]
pub struct Timeline {
    /// Per stage: (action, start, end), in the order run.
    pub stages: Vec<Vec<(Action, f64, f64)>>,
}

impl Timeline {
    /// The step's length: from the first start to the last end.
    pub fn span(&self) -> f64 {
        let all = self.stages.iter().flatten();
        let start = all.clone().map(|a| a.1).fold(f64::INFINITY, f64::min);
        let end = all.map(|a| a.2).fold(f64::NEG_INFINITY, f64::max);
        end - start
    }

    /// The idle fraction: 1 − (busy time over every stage) / (stages × span).
    pub fn bubble(&self) -> f64 {
        let busy: f64 = self.stages.iter().flatten().map(|a| a.2 - a.1).sum();
        1.0 - busy / (self.stages.len() as f64 * self.span())
    }

    /// The most micro-batches stage s holds activations for at once (forwarded, not yet
    /// backpropagated).
    pub fn peak_in_flight(&self, s: usize) -> usize {
        let mut n: usize = 0;
        let mut peak = 0;
        for (a, _, _) in &self.stages[s] {
            match a {
                Action::Forward(_) => n += 1,
                Action::Backward(_) => n -= 1,
            }
            peak = peak.max(n);
        }
        peak
    }
}

/// Runs `schedule` for p stages and m micro-batches with forward time `tf(s)` and backward
/// time `tb(s)` on stage s.
pub fn simulate(
    schedule: Schedule,
    p: usize,
    m: usize,
    tf: impl Fn(usize) -> f64,
    tb: impl Fn(usize) -> f64,
) -> Timeline {
    let plans: Vec<Vec<Action>> = (0..p).map(|s| actions(schedule, p, s, m)).collect();
    let mut next = vec![0usize; p];
    let mut free = vec![0f64; p];
    // when micro-batch j's forward / backward finished on each stage
    let mut fwd = vec![vec![None::<f64>; m]; p];
    let mut bwd = vec![vec![None::<f64>; m]; p];
    let mut stages = vec![vec![]; p];
    loop {
        let mut progressed = false;
        for s in 0..p {
            while let Some(&a) = plans[s].get(next[s]) {
                let ready = match a {
                    Action::Forward(_) if s == 0 => Some(0.0),
                    Action::Forward(j) => fwd[s - 1][j],
                    // the last stage's backward starts from its own forward (the loss)
                    Action::Backward(j) if s + 1 == p => fwd[s][j],
                    Action::Backward(j) => bwd[s + 1][j],
                };
                let Some(ready) = ready else { break };
                let start = free[s].max(ready);
                let (end, done) = match a {
                    Action::Forward(j) => (start + tf(s), &mut fwd[s][j]),
                    Action::Backward(j) => (start + tb(s), &mut bwd[s][j]),
                };
                *done = Some(end);
                free[s] = end;
                stages[s].push((a, start, end));
                next[s] += 1;
                progressed = true;
            }
        }
        if next.iter().zip(&plans).all(|(&n, p)| n == p.len()) {
            return Timeline { stages };
        }
        assert!(
            progressed,
            "the schedule deadlocks: {schedule:?}, p {p}, m {m}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPES: [(usize, usize); 5] = [(2, 2), (2, 8), (3, 4), (4, 6), (3, 5)];
    const ALL: [Schedule; 3] = [Schedule::Naive, Schedule::Gpipe, Schedule::OneFOneB];

    #[test]
    fn every_schedule_visits_the_stages_in_order_one_thing_at_a_time() {
        for (p, m) in SHAPES {
            for schedule in ALL {
                // uneven times, so that an ordering bug cannot hide behind ties
                let t = simulate(schedule, p, m, |s| 1.0 + s as f64, |s| 2.0 + 0.5 * s as f64);
                let what = format!("{schedule:?} p {p} m {m}");
                for (s, acts) in t.stages.iter().enumerate() {
                    // each stage runs every micro-batch's forward and backward exactly once
                    assert_eq!(acts.len(), 2 * m, "{what}");
                    // no stage runs two things at once
                    for w in acts.windows(2) {
                        assert!(w[1].1 >= w[0].2, "{what}: stage {s} overlaps");
                    }
                    // backwards in micro-batch order (one device's accumulation order)
                    let b: Vec<usize> = acts
                        .iter()
                        .filter(|a| matches!(a.0, Action::Backward(_)))
                        .map(|a| a.0.micro_batch())
                        .collect();
                    assert_eq!(b, (0..m).collect::<Vec<_>>(), "{what}");
                }
                let when = |s: usize, a: Action| {
                    t.stages[s]
                        .iter()
                        .find(|x| x.0 == a)
                        .map(|x| (x.1, x.2))
                        .unwrap()
                };
                for j in 0..m {
                    // forward through stages 0..p−1 in order, backward in reverse
                    for s in 1..p {
                        assert!(when(s, Action::Forward(j)).0 >= when(s - 1, Action::Forward(j)).1);
                        assert!(
                            when(s - 1, Action::Backward(j)).0 >= when(s, Action::Backward(j)).1
                        );
                    }
                    assert!(
                        when(p - 1, Action::Backward(j)).0 >= when(p - 1, Action::Forward(j)).1
                    );
                }
                for s in 0..p {
                    let peak = t.peak_in_flight(s);
                    match schedule {
                        Schedule::Naive => assert_eq!(peak, 1, "{what}"),
                        Schedule::Gpipe => assert_eq!(peak, m, "{what}"),
                        Schedule::OneFOneB => {
                            assert!(peak <= p - s, "{what}: stage {s} holds {peak}");
                            assert_eq!(peak, (p - s).min(m), "{what}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn equal_times_give_the_textbook_bubble() {
        for (p, m) in SHAPES {
            for schedule in ALL {
                let t = simulate(schedule, p, m, |_| 1.0, |_| 1.0);
                let want = schedule.ideal_bubble(p, m);
                assert!(
                    (t.bubble() - want).abs() < 1e-12,
                    "{schedule:?} p {p} m {m}: {} vs {want}",
                    t.bubble()
                );
            }
        }
    }
}
