// The step guard: one invocation between the gradient norm and the optimizer. A step whose loss
// or gradient is not finite (NaN or ±Inf) is skipped: the guard sets the skip word every
// optimizer kernel reads, and counts the step in `health` for the host to read at its next sync
// point (a logging step, a checkpoint, the end), so a step costs no readback for this.
//
// stats (2, f32): [0] Σg² over every trainable gradient (written before), [1] skip (1.0) or not (0.0)
// health (4, u32): [0] non-finite steps so far, [1] the first one's step number (1-based; 0:
// none), [2] the last one's, [3] what the first had: bit 0 the loss, bit 1 the gradient

struct Params {
    step: u32, // the step being taken, 1-based
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> loss_sum: array<f32>;
@group(0) @binding(2) var<storage, read_write> stats: array<f32>;
@group(0) @binding(3) var<storage, read_write> health: array<u32>;

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
    if (bad) {
        health[0] = health[0] + 1u;
        if (health[1] == 0u) {
            health[1] = p.step;
            health[3] = select(0u, 1u, bad_loss) | select(0u, 2u, bad_grad);
        }
        health[2] = p.step;
    }
}
