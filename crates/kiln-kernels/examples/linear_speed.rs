//! Times one linear layer in f32 (`gemm`) and in int8 (VNNI) at a given shape, to choose and
//! tune kernels: `cargo run --release -p kiln-kernels --example linear_speed -- ROWS IN OUT`
//! (default: a Whisper-base encoder MLP product, 1500 × 512 → 2048).

use std::time::Instant;

use kiln_kernels::{int8::Int8Linear, Linear};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (rows, inputs, outputs) = match args[..] {
        [r, i, o] => (r, i, o),
        _ => (1500, 512, 2048),
    };
    let values = |n: usize, seed: u32| -> Vec<f32> {
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) % 1000) as f32 / 500.0
                    - 1.0
            })
            .collect()
    };
    let x = values(rows * inputs, 1);
    let weight_t = values(inputs * outputs, 2);
    let bias = values(outputs, 3);
    let dense = Linear {
        weight_t: weight_t.clone(),
        bias: bias.clone(),
        in_features: inputs,
        out_features: outputs,
    };
    let mut out = vec![0f32; rows * outputs];
    let flops = 2.0 * (rows * inputs * outputs) as f64;
    let time = |f: &mut dyn FnMut()| {
        f();
        let runs = 10;
        let started = Instant::now();
        for _ in 0..runs {
            f();
        }
        started.elapsed().as_secs_f64() / runs as f64
    };
    let t = time(&mut || dense.forward_into(&x, &mut out, false));
    println!(
        "f32  {rows}×{inputs}→{outputs}: {:.2} ms, {:.1} GFLOP/s",
        t * 1e3,
        flops / t / 1e9
    );
    match Int8Linear::from_transposed(&weight_t, &bias, inputs, outputs) {
        Some(q) => {
            let t = time(&mut || q.forward_into(&x, &mut out, false));
            println!(
                "int8 {rows}×{inputs}→{outputs}: {:.2} ms, {:.1} GOP/s",
                t * 1e3,
                flops / t / 1e9
            );
        }
        None => println!("int8: this CPU has no AVX-512 VNNI"),
    }
}
