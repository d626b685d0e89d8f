// The step guard and the loss scaler: one invocation between the gradient norm and the
// optimizer. A step whose loss or gradient is not finite (NaN or ±Inf) is skipped: the guard sets
// the skip word every optimizer kernel reads. With a loss scaler (PyTorch's GradScaler rules), a
// non-finite gradient is an overflow of the scaled gradients: the step is skipped, the scale
// halves and nothing counts as a failure; after `growth_interval` finite steps in a row the scale
// doubles. A non-finite loss, or an overflow at a scale already below MIN_SCALE, is a failure:
// counted in `health` for the host to read at its next sync point (a logging step, a checkpoint,
// the end), so a step costs no readback for any of this.
//
// stats (8, f32), one per trainer, kept across steps:
//   [0] Σg² over every trainable gradient (written before, of the scaled gradients; the guard
//       unscales it), [1] skip (1.0) or not (0.0), [2] the factor that unscales this step's
//       gradients (1/scale), [3] optimizer steps taken before this one (skipped ones not
//       counted: Adam's bias corrections use t = [3] + 1; `count_step` after the update adds it), [4] the loss scale the next backward multiplies the loss by
//       (1 without a scaler), [5] finite steps since the scale last changed, [6] overflow skips so
//       far, [7] unused
// health (4, u32): [0] failed steps so far, [1] the first one's step number (1-based; 0: none),
// [2] the last one's, [3] what the first had: bit 0 the loss, bit 1 the gradient

struct Params {
    step: u32, // the step being taken, 1-based
    scaler: u32, // 1: dynamic loss scaling
    growth_interval: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> loss_sum: array<f32>;
@group(0) @binding(2) var<storage, read_write> stats: array<f32>;
@group(0) @binding(3) var<storage, read_write> health: array<u32>;

// Below this the scaler gives up: the gradients overflow however small the scale (2^-24, f16's
// smallest subnormal, 40 halvings from the initial 2^16).
const MIN_SCALE: f32 = 5.9604645e-8;

// By the bits, since a NaN comparison may be folded away: exponent all ones is Inf or NaN.
fn finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

@compute @workgroup_size(1)
fn guard() {
    let bad_loss = !finite(loss_sum[0]);
    // Σg² also overflows to Inf when the gradients are finite but beyond ~1e19 in norm; such a
    // step would be destructive anyway, and is skipped too.
    let bad_grad = !finite(stats[0]);
    let bad = bad_loss || bad_grad;
    stats[1] = select(0.0, 1.0, bad);
    var failed = bad;
    if (p.scaler == 1u) {
        let scale = stats[4];
        // the scale is a power of two, so unscaling is exact
        let inv = 1.0 / scale;
        stats[2] = inv;
        if (bad_grad && !bad_loss) {
            stats[4] = scale * 0.5;
            stats[5] = 0.0;
            stats[6] = stats[6] + 1.0;
            failed = scale < MIN_SCALE;
        } else if (!bad) {
            stats[0] = stats[0] * inv * inv;
            stats[5] = stats[5] + 1.0;
            if (u32(stats[5]) >= p.growth_interval) {
                stats[4] = scale * 2.0;
                stats[5] = 0.0;
            }
        }
    } else {
        stats[2] = 1.0;
    }
    if (failed) {
        health[0] = health[0] + 1u;
        if (health[1] == 0u) {
            health[1] = p.step;
            health[3] = select(0u, 1u, bad_loss) | select(0u, 2u, bad_grad);
        }
        health[2] = p.step;
    }
}

// After an optimizer step: counts it in the steps taken unless it was skipped. (stats at binding 1
// here: this entry point binds nothing else.)
@group(0) @binding(1) var<storage, read_write> step_stats: array<f32>;

@compute @workgroup_size(1)
fn count_step() {
    if (step_stats[1] == 0.0) {
        step_stats[3] = step_stats[3] + 1.0;
    }
}
