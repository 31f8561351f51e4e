//! `hr-eval --device`: an unknown device or a GPU on a machine without one is a clear error,
//! reported before the checkpoint is read.

use std::process::Command;

fn hr_eval(device: &str) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hr-eval"))
        .args(["--checkpoint", "/nonexistent/run", "--device", device])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_devices_are_clear_errors() {
    let (ok, err) = hr_eval("tpu");
    assert!(
        !ok && err.contains("--device") && err.contains("tpu"),
        "{err}"
    );
    if hr_tensor::cuda::driver_present() {
        println!("skipped the no-driver case: a CUDA driver is present");
        return;
    }
    let (ok, err) = hr_eval("cuda");
    assert!(
        !ok && err.contains("--device") && err.contains("driver"),
        "{err}"
    );
}
