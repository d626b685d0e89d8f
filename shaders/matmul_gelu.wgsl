// Spliced into a matmul kernel family in place of its no-op `epilogue_aux` (src/gpu/shaders.rs:
// GeluForm), so that a Linear layer and the GELU next to it take one pass over C:
//   GELU_GRAD false (forward):  c = v, the layer's pre-activation; aux = gelu(v)
//   GELU_GRAD true (backward):  c = v · gelu'(aux), with v = dy·W the gradient at the GELU's
//                               output and aux the pre-activation
// aux is (M, N) like C, in vec4s. The expressions are elementwise.wgsl's gelu_forward4 and
// gelu_backward4, so the bits are those of the matmul followed by those kernels.
// The form declares `override GELU_GRAD: bool` (true: backward) at the top of the source: declared
// here, in the middle of the module, naga 30's pipeline-constant pass panicked (an assertion on
// the order of the overrides' handles).

@group(0) @binding(5) var<storage, read_write> aux: array<vec4<f32>>;

// GELU, tanh approximation as GPT-2: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
const GELU_S: f32 = 0.7978845608028654;
const GELU_C: f32 = 0.044715;

fn gelu_tanh4(u: vec4<f32>) -> vec4<f32> {
    let e = exp(-2.0 * abs(u));
    return sign(u) * (1.0 - e) / (1.0 + e);
}

fn epilogue_aux(ci: u32, v: vec4<f32>) -> vec4<f32> {
    if (GELU_GRAD) {
        let x = aux[ci];
        let u = GELU_S * (x + GELU_C * x * x * x);
        let t = gelu_tanh4(u);
        let du = GELU_S * (1.0 + 3.0 * GELU_C * x * x);
        return v * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du);
    }
    aux[ci] = 0.5 * v * (1.0 + gelu_tanh4(GELU_S * (v + GELU_C * v * v * v)));
    return v;
}
