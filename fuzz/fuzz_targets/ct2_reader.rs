//! The CTranslate2 `model.bin` reader of the Whisper engine, then the Whisper configuration and
//! the tensor conversion it feeds.
#![no_main]
use kiln_engine_whisper::ct2::Ct2Model;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(model) = Ct2Model::parse(data) else {
        return;
    };
    if let Ok(config) = model.whisper_config(Vec::new()) {
        let _ = model.to_hf_tensors(&config);
    }
});
