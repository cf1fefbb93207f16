//! `airlock config check FILE`: the configuration `airlock watch --config
//! FILE` would load, checked without starting anything.

mod support;

use std::process::Output;

fn check(yaml: &str, envs: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("airlock.yaml");
    std::fs::write(&path, yaml).expect("write the config");
    let mut command = support::airlock();
    command.args(["config", "check"]).arg(&path);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AIRLOCK_") {
            command.env_remove(name);
        }
    }
    command.envs(envs.iter().copied());
    command.output().expect("run airlock config check")
}

const VALID: &str = "drop: {dirs: [/nowhere/drop]}\ntrust: {public_keys: [/nowhere/keys]}\nregistry: {target: registry.local/mirror}\n";

#[test]
fn a_valid_configuration_passes_even_where_its_paths_do_not_exist() {
    let output = check(VALID, &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).ends_with("airlock.yaml: ok\n"));
}

#[test]
fn an_unknown_key_fails_with_exit_code_2_and_the_error_watch_would_give() {
    let output = check(&format!("{VALID}imports: {{on_sucess: move}}\n"), &[]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("unknown key \"imports.on_sucess\"")
            && stderr.contains("did you mean \"imports.on_success\""),
        "{stderr}"
    );
}

#[test]
fn environment_variables_count_as_they_do_for_watch() {
    let without_target = "drop: {dirs: [/d]}\ntrust: {public_keys: [/k]}\n";
    let output = check(without_target, &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("registry.target is required"));
    let output = check(
        without_target,
        &[("AIRLOCK_REGISTRY__TARGET", "registry.local/mirror")],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = check(VALID, &[("AIRLOCK_DROP__SETTLE_TIME", "soon")]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("AIRLOCK_DROP__SETTLE_TIME"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_missing_file_fails_with_exit_code_2() {
    let output = support::airlock()
        .args(["config", "check", "/nowhere/airlock.yaml"])
        .output()
        .expect("run airlock config check");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nowhere/airlock.yaml"));
}
