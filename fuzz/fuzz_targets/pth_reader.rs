//! The legacy (pre-zip) PyTorch pickle reader of the vision engine.
#![no_main]
use kiln_engine_vision::pth::read_legacy_pth_from;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut reader = std::io::Cursor::new(data);
    let _ = read_legacy_pth_from(&mut reader);
});
