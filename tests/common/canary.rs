//! The example AnalysisTemplates (deploy/examples/canary/) judging live answers of the
//! analysis endpoint: a template's `jsonPath` applied by the real `jsonpath-ng` and its
//! conditions evaluated by scripts/deploy_checks/canary.py (`verdict`), in the venv
//! scripts/check-deploy.sh creates (`.venv-test`).

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

/// What Argo Rollouts would make of `answer` under the example AnalysisTemplate named
/// `template`: Successful, Failed, Inconclusive or Error.
pub fn verdict(template: &str, answer: &serde_json::Value) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv-test/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/check-deploy.sh once to create it",
        python.display()
    );
    let mut child = Command::new(python)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .arg(root.join("scripts/deploy_checks/canary.py"))
        .arg("verdict")
        .arg(root.join("deploy/examples/canary"))
        .arg(template)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(answer.to_string().as_bytes())
        .expect("write the answer");
    let out = child.wait_with_output().expect("python ends");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
