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
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import chart  # noqa: E402
import examples  # noqa: E402
import live  # noqa: E402
import promql  # noqa: E402
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
    examples.run(report, os.path.join("deploy", "examples"), crd)
    used = promql.run(report, [os.path.join("deploy", "grafana", "slo-scaler.json"),
                               os.path.join(chart_dir, "dashboards", "slo-scaler.json")],
                      rendered, promtool, work_dir)

    binary = os.environ.get("SLO_SCALER_BIN", "").strip()
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
    elif "default values" not in rendered:
        report.fail("live part", "the chart did not render with default values")
    else:
        args, env = chart.deployment_args(rendered["default values"])
        live.run(report, os.path.abspath(binary), args, env, used, work_dir)
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
