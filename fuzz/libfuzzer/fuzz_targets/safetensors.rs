#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| sqlora_fuzz::Target::Safetensors.run(data));
