#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hr_fuzz::report_only_uncaught_panics();
    hr_fuzz::ring(data)
});
