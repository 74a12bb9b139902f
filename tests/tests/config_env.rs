//! `HA_*` variables accept what the original accepted (issue 19): an empty value means unset
//! (the default applies), and switches read 1/0, t/f, true/false in any case. Checked with
//! `ha --check-config`, which validates like start-up and prints the effective settings.

use ha_tests::run_ha;

/// `ha --check-config` with `env`: its exit code and output.
fn check(env: &[(&str, &str)]) -> (i32, String) {
    let out = run_ha(&["--check-config", "--nats-port", "0"], env).unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &*String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn empty_variables_mean_unset() {
    for var in [
        "HA_PORT",
        "HA_MEMORY",
        "HA_TOKEN",
        "HA_LOG_LEVEL",
        "HA_REPLICAS",
        "HA_NATS_USER",
        "HA_NATS_PASS",
        "HA_DSN",
    ] {
        let (code, text) = check(&[(var, "")]);
        assert_eq!(code, 0, "{var}=\"\": {text}");
        assert!(text.contains("http_port: 8080"), "{var}: {text}");
    }
}

#[test]
fn switches_accept_1_0_t_f_true_false() {
    for (value, memory) in [
        ("1", true),
        ("t", true),
        ("true", true),
        ("TRUE", true),
        ("0", false),
        ("f", false),
        ("false", false),
    ] {
        let (code, text) = check(&[("HA_MEMORY", value)]);
        assert_eq!(code, 0, "HA_MEMORY={value}: {text}");
        assert_eq!(
            text.contains("Memory {"),
            memory,
            "HA_MEMORY={value}: {text}"
        );
    }
    let (code, text) = check(&[("HA_MEMORY", "maybe")]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("--memory"), "{text}");
}
