"""Checks everything under deploy/: chart, examples, alert rules, dashboard, and the live binary.

Run by scripts/check-deploy.sh inside its venv. Environment:
  SHARED_DIR             the shared/ directory (default ../shared from the repo root)
  SLO_SCALER_BIN         the built binary; unset skips the live part, which fails the run
                         unless --static-only is given
  DEPLOY_CHECK_WORKLOAD  a shell command run against the live server before the scrape,
                         given SLO_SCALER_TEST_{GRPC,ADMIN,OTLP_GRPC,OTLP_HTTP}_ADDR
  PROMTOOL               promtool (default /usr/bin/promtool)
"""

import argparse
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import admission  # noqa: E402
import chart  # noqa: E402
import examples  # noqa: E402
import fanout_live  # noqa: E402
import canary  # noqa: E402
import docs  # noqa: E402
import live  # noqa: E402
import policy  # noqa: E402
import promql  # noqa: E402
import readme  # noqa: E402
from report import Report  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--static-only", action="store_true",
                        help="skip the live part (no SLO_SCALER_BIN) without failing")
    opts = parser.parse_args()

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    os.chdir(root)
    chart_dir = os.path.join("deploy", "helm", "slo-scaler")
    shared = os.environ.get("SHARED_DIR") or os.path.join("..", "shared")
    crd = os.path.join(shared, "data", "keda", "keda.sh_scaledobjects.yaml")
    promtool = os.environ.get("PROMTOOL") or "/usr/bin/promtool"
    work_dir = os.path.join("target", "deploy-check")
    os.makedirs(work_dir, exist_ok=True)
    report = Report()

    rendered = chart.run(report, chart_dir, os.path.join(chart_dir, "ci", "all-on-values.yaml"))
    with open("README.md") as f:
        readme_text = f.read()
    try:
        release, namespace, readme_chart, readme_values = readme.helm_install(readme_text)
        report.check("README's helm install line parsed",
                     [] if (os.path.normpath(readme_chart), release, namespace) ==
                     (os.path.normpath(chart_dir), chart.RELEASE, chart.NAMESPACE) else
                     [f"it installs {readme_chart} as {release} in {namespace}; the checks render "
                      f"{chart_dir} as {chart.RELEASE} in {chart.NAMESPACE}"],
                     f"values {readme_values}")
    except readme.ReadmeError as e:
        report.fail("README's helm install line parsed", e)
        readme_values = None
    with open(readme.TRIGGERS_DOC) as f:
        triggers_text = f.read()
    with open(readme.INSTALL_DOC) as f:
        install_text = f.read()
    try:
        so, trigger = readme.first_trigger(triggers_text)
        report.ok(f"{readme.TRIGGERS_DOC}'s first latency trigger found", so["metadata"]["name"])
    except readme.ReadmeError as e:
        report.fail(f"{readme.TRIGGERS_DOC}'s first latency trigger found", e)
        so, trigger = None, None
    readme_docs = None
    if readme_values is not None:
        try:
            readme_docs, _ = chart.render(chart_dir, readme_values)
        except Exception as e:  # helm_python raises HelmError subclasses
            report.fail("helm render (README's helm install)", e)
    with open(os.path.join("docs", "prometheus-backends.md")) as f:
        backends_text = f.read()
    policy.run(report, chart_dir, readme_text, readme_values, rendered, backends_text, install_text)
    shown = docs.run(report, crd, readme_text, chart_dir, readme_values)
    examples.run(report, os.path.join("deploy", "examples"), crd)
    binary = os.environ.get("SLO_SCALER_BIN", "").strip()
    admission.run(report, rendered, shown + examples.triggers(os.path.join("deploy", "examples")),
                  work_dir, os.path.abspath(binary) if binary and os.access(binary, os.X_OK) else None)
    canary.run(report, os.path.join("deploy", "examples", "canary"), shared, crd)
    used = promql.run(report, [os.path.join("deploy", "grafana", "slo-scaler.json"),
                               os.path.join(chart_dir, "dashboards", "slo-scaler.json")],
                      rendered, promtool, work_dir)

    if not binary:
        reason = ("SLO_SCALER_BIN is unset, so the Deployment's args were not run against the real "
                  "binary and no live scrape was checked (build it: cargo build, then "
                  "SLO_SCALER_BIN=target/debug/slo-scaler)")
        if opts.static_only:
            report.skip("live part", reason)
        else:
            report.fail("live part", reason + "; pass --static-only to skip it on purpose")
    elif not os.access(binary, os.X_OK):
        report.fail("live part", f"SLO_SCALER_BIN={binary} is not an executable file")
    elif readme_docs is None or trigger is None:
        report.fail("live part", "the README's helm install or docs/triggers.md's first latency "
                                 "trigger was not usable")
    else:
        docs.parsed_by_binary(report, os.path.abspath(binary), shown, work_dir)
        # The example files' triggers too: the binary refuses a key its signal and source do not
        # use, which the flat list of known keys cannot see.
        docs.parsed_by_binary(report, os.path.abspath(binary),
                              examples.triggers(os.path.join("deploy", "examples")), work_dir,
                              "examples: `slo-scaler check` parses every trigger in deploy/examples",
                              "example-trigger")
        docs.flags(report, os.path.abspath(binary), docs.doc_files())
        known_flags(report, binary, [chart.deployment_args(d)[0] for d in
                                     [readme_docs, *rendered.values()]] + policy.flag_cases(chart_dir))
        args, env = chart.deployment_args(readme_docs)
        live.run(report, os.path.abspath(binary), args, env, used, work_dir,
                 {"so": so, "trigger": trigger})
        fanout_live.run(report, os.path.abspath(binary), chart_dir, {"so": so, "trigger": trigger},
                        work_dir)
    return report.finish()


def known_flags(report, binary, arg_lists):
    """Every flag the chart renders is one `slo-scaler serve` knows."""
    out = subprocess.run([binary, "serve", "--help"], capture_output=True, text=True).stdout
    known = set(re.findall(r"(--[a-z][a-z0-9-]+)", out))
    used = {a.split("=", 1)[0] for args in arg_lists for a in args if a.startswith("--")}
    report.check("every flag the chart renders exists in the binary",
                 [f"{f} is not a flag of `slo-scaler serve`" for f in sorted(used - known)],
                 f"{len(used)} flags")


if __name__ == "__main__":
    sys.exit(main())
