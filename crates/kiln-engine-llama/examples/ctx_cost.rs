use std::num::NonZeroU32;
use std::time::Instant;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::{params::LlamaModelParams, LlamaModel};
fn main() {
    llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default().with_logs_enabled(false));
    let backend = LlamaBackend::init().unwrap();
    let path = std::env::args().nth(1).unwrap();
    let model = LlamaModel::load_from_file(&backend, path, &LlamaModelParams::default()).unwrap();
    for n_ctx in [8192u32, 8192, 8192, 2048] {
        let t = Instant::now();
        let mut ctx = model.new_context(&backend, LlamaContextParams::default().with_n_ctx(NonZeroU32::new(n_ctx)).with_n_batch(512).with_n_ubatch(512).with_n_threads(2).with_n_threads_batch(2)).unwrap();
        let created = t.elapsed();
        let t = Instant::now();
        ctx.clear_kv_cache();
        let full_clear = t.elapsed();
        let t = Instant::now();
        ctx.clear_kv_cache_seq(Some(0), None, None).unwrap();
        let seq_clear = t.elapsed();
        let t = Instant::now();
        drop(ctx);
        println!("n_ctx {n_ctx}: create {created:?}, clear(data) {full_clear:?}, seq_rm {seq_clear:?}, drop {:?}", t.elapsed());
    }
}
