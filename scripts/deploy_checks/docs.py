"""The documentation's snippets and links: README.md, CONTRIBUTING.md, ARCHITECTURE.md and docs/.

- every relative link leads to a file (and a `#heading` to a heading of that file);
- every test ARCHITECTURE.md names (`` `tests/grpc/main.rs::name` ``, `` `src/x.rs::name` ``) is a
  `#[test]` function of that file, no test is named another way, and every invariant names one;
- every ```yaml and ```json block parses;
- every trigger shown (a ScaledObject, a list of triggers, or a trigger's metadata alone) uses
  only keys the scaler knows and the metricType its signal needs, every ScaledObject passes
  KEDA's CRD schema, and (with the binary) `slo-scaler check` parses each `external` trigger;
- the trigger-metadata table lists exactly the keys the checks know;
- the README's test command is the one `.ci/run` runs, and its quickstart trigger is the file
  its `slo-scaler check` line explains;
- every `helm upgrade --reuse-values` shown renders on top of the README's install;
- (with the binary) docs/configuration.md's table lists exactly the flags of `slo-scaler
  serve`, and every `slo-scaler SUB` / `cargo run -- SUB` command shown uses flags SUB has.

Each check fails when it finds nothing to check, so a moved heading or file cannot turn it
into a pass.
"""

import copy
import glob
import json
import os
import re
import shlex
import subprocess

import helm_python as helm
import jsonschema
import yaml

import chart
import examples
import readme

FILES = ["README.md", "CONTRIBUTING.md", "ARCHITECTURE.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")
# KEDA's keys that the scaler accepts and ignores; the metadata table lists the others.
KEDA_KEYS = {"scalerAddress", "enableTLS", "unsafeSsl"}
METADATA_DOC = os.path.join("docs", "trigger-metadata.md")
# A test as ARCHITECTURE.md names it: `path/to/file.rs::function`.
TEST_REF = re.compile(r"`((?:src|tests|benches|fuzz)/[\w./-]+\.rs)::(\w+)`")
# Test names in the forms the marker replaced: `module::tests::name`, `tests/suite` `name`.
OLD_TEST_REF = re.compile(r"`[\w:]*\btests::\w+`|`tests/\w+` `\w+`")
# `#[test]`, `#[tokio::test]`, `#[tokio::test(flavor = …)]`.
TEST_ATTR = re.compile(r"#\[(?:\w+::)*test\b")


def doc_files():
    return FILES + sorted(glob.glob(os.path.join("docs", "**", "*.md"), recursive=True))


def slug(heading):
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path):
    with open(path) as f:
        text = re.sub(r"^```.*?^```", "", f.read(), flags=re.S | re.M)
    return {slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


def links(report, files):
    """Every relative link of the documentation resolves."""
    problems, seen = [], 0
    for path in files:
        with open(path) as f:
            text = re.sub(r"^```.*?^```", "", f.read(), flags=re.S | re.M)
        for target in LINK.findall(text):
            if re.match(r"^[a-z]+:", target):
                continue
            seen += 1
            file_part, _, anchor = target.partition("#")
            dest = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
            if not os.path.exists(dest):
                problems.append(f"{path}: link {target}: {dest} does not exist")
            elif anchor and dest.endswith(".md") and anchor not in anchors(dest):
                problems.append(f"{path}: link {target}: {dest} has no heading #{anchor}")
    if not seen:
        problems.append(f"no relative link found in {files}")
    report.check("docs: every relative link leads to a file and heading", problems,
                 f"{seen} links in {len(files)} files")


def test_fn(source, name):
    """Whether `source` defines `fn name` under a test attribute: True, False (a plain
    function), or None (no such function)."""
    lines = source.splitlines()
    for i, line in enumerate(lines):
        if not re.match(rf"^\s*(?:pub(?:\([\w:]+\))?\s+)?(?:async\s+)?fn {name}\b", line):
            continue
        # The attributes and doc comments right above it (multi-line attributes included).
        above = []
        for prev in reversed(lines[:i]):
            if not prev.strip() or prev.rstrip().endswith(("}", ";", "{")):
                break
            above.append(prev)
        return any(TEST_ATTR.search(l) for l in above if l.lstrip().startswith("#["))
    return None


def architecture_tests(report, path="ARCHITECTURE.md"):
    """Every test ARCHITECTURE.md names exists as a test in the file it names; every invariant
    names at least one, in the `file.rs::function` form and no other."""
    name = f"{path}: every test it names is a test of the file it names; every invariant names one"
    with open(path) as f:
        text = f.read()
    problems, sources = [], {}
    refs = TEST_REF.findall(text)
    for file, fn in refs:
        if file not in sources:
            sources[file] = open(file).read() if os.path.isfile(file) else None
        if sources[file] is None:
            problems.append(f"`{file}::{fn}`: {file} does not exist")
            continue
        found = test_fn(sources[file], fn)
        if found is None:
            problems.append(f"`{file}::{fn}`: no `fn {fn}` in {file}")
        elif not found:
            problems.append(f"`{file}::{fn}`: `fn {fn}` in {file} is not a #[test]")
    problems += [f"{old} names a test another way: write `path/to/file.rs::function`"
                 for old in OLD_TEST_REF.findall(text)]
    section = re.search(r"^## Invariants.*?(?=^## |\Z)", text, re.S | re.M)
    invariants = re.split(r"^\d+\. ", section.group(0), flags=re.M)[1:] if section else []
    if not invariants:
        problems.append(f"no numbered invariant under a `## Invariants` heading of {path}")
    for i, item in enumerate(invariants, 1):
        if not TEST_REF.search(item):
            problems.append(f"invariant {i} names no test: {item.splitlines()[0][:80]}")
    if not refs:
        problems.append(f"no test named in {path}")
    report.check(name, problems, f"{len(refs)} tests named, {len(invariants)} invariants")


def blocks(path):
    with open(path) as f:
        return readme.FENCE.findall(f.read())


def triggers_of(doc):
    """(ScaledObject or None, [trigger]) for a YAML document that shows triggers, else None."""
    if isinstance(doc, dict) and doc.get("kind") == "ScaledObject":
        return doc, list((doc.get("spec") or {}).get("triggers") or [])
    if isinstance(doc, list) and doc and all(isinstance(t, dict) and "type" in t for t in doc):
        return None, doc
    if isinstance(doc, dict) and "signal" in doc and "kind" not in doc:
        return None, [{"type": "external", "metadata": doc, "bare": True}]
    return None


def parse_blocks(report, files):
    """Every yaml / json block parses; returns [(path, ScaledObject or None, trigger)]."""
    problems, found, counted = [], [], 0
    for path in files:
        for lang, body in blocks(path):
            if lang == "json":
                counted += 1
                try:
                    json.loads(body)
                except ValueError as e:
                    problems.append(f"{path}: a json block does not parse: {e}")
            elif lang == "yaml":
                counted += 1
                try:
                    docs = [d for d in yaml.safe_load_all(body) if d is not None]
                except yaml.YAMLError as e:
                    problems.append(f"{path}: a yaml block does not parse: {e}")
                    continue
                for d in docs:
                    shown = triggers_of(d)
                    if shown:
                        found += [(path, shown[0], t) for t in shown[1]]
    if not counted:
        problems.append("no yaml or json block found")
    report.check("docs: every yaml and json block parses", problems, f"{counted} blocks")
    return found


def external_triggers(report, name, found):
    """The `external` / `external-push` triggers among `found`; none fails check `name`."""
    externals = [(p, so, t) for p, so, t in found if t.get("type") in ("external", "external-push")]
    if not externals:
        report.fail(name, "no external or external-push trigger found")
    return externals


def trigger_rules(report, found, crd_file):
    """The keys and metricType of every trigger shown; every ScaledObject against KEDA's CRD."""
    name = "docs: every trigger shown uses known keys and its signal's metricType; ScaledObjects pass KEDA's CRD"
    externals = external_triggers(report, name, found)
    if not externals:
        return
    problems = []
    validator = (jsonschema.Draft7Validator(examples.crd_schema(crd_file))
                 if os.path.isfile(crd_file) else None)
    if validator is None:
        problems.append(f"{crd_file} is missing (set SHARED_DIR to the shared/ directory)")
    checked = set()
    for path, so, t in externals:
        meta = t.get("metadata") or {}
        where = f"{path}: {meta.get('signal')} trigger for {meta.get('service') or meta.get('queueURL') or meta.get('query')}"
        unknown = sorted(set(meta) - examples.METADATA_KEYS)
        if unknown:
            problems.append(f"{where}: unknown metadata keys {unknown}")
        if not t.get("bare"):
            if meta.get("scalerAddress") != examples.SCALER_ADDRESS:
                problems.append(f"{where}: scalerAddress {meta.get('scalerAddress')}, want {examples.SCALER_ADDRESS}")
            want = examples.METRIC_TYPE.get(meta.get("signal"))
            got = t.get("metricType", "AverageValue")  # KEDA's default
            if want and got != want:
                problems.append(f"{where}: signal {meta.get('signal')} needs metricType {want}, got {got}")
        if so is not None and validator is not None and id(so) not in checked:
            checked.add(id(so))
            problems += [f"{path}: ScaledObject {so['metadata'].get('name')}: "
                         f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
                         for e in validator.iter_errors(so)]
    report.check(name, problems, f"{len(externals)} triggers, {len(checked)} ScaledObjects")


def parsed_by_binary(report, binary, found, work_dir,
                     name="docs: `slo-scaler check` parses every trigger shown", prefix="docs-trigger"):
    """`slo-scaler check` parses every external trigger in `found` (backends unreachable: the
    check reads the parse, which comes before any backend call), so a key the binary refuses
    for the trigger's signal and source fails it. Each ScaledObject is written to
    `work_dir/<prefix>-N.yaml` and checked with `-f` and `--trigger`."""
    externals = external_triggers(report, name, found)
    if not externals:
        return
    problems = []
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLO_SCALER_", "AWS_"))}
    # Static credentials: the AWS default chain would otherwise ask the instance metadata service.
    env.update(AWS_ACCESS_KEY_ID="docs-check", AWS_SECRET_ACCESS_KEY="docs-check")
    for i, (path, so, t) in enumerate(externals):
        meta = {k: str(v) for k, v in (t.get("metadata") or {}).items()}
        backends = {"default", meta.get("backend", "default")}
        cmd = [binary, "check", "--aws-region", "eu-west-1", "--aws-endpoint", "http://127.0.0.1:9"]
        for b in sorted(backends):
            cmd += ["--prometheus", f"{b}=http://127.0.0.1:9", "--tempo", f"{b}=http://127.0.0.1:9"]
        namespace = ((so or {}).get("metadata") or {}).get("namespace", "shop")
        cmd += ["--namespace", namespace]
        if t.get("bare"):
            for k, v in meta.items():
                cmd += ["-m", f"{k}={v}"]
        else:
            trigger = {k: v for k, v in t.items() if k != "bare"}
            obj = so or {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                         "metadata": {"name": "docs-check", "namespace": namespace},
                         "spec": {"scaleTargetRef": {"name": "docs-check"}, "triggers": [trigger]}}
            file = os.path.join(work_dir, f"{prefix}-{i}.yaml")
            with open(file, "w") as f:
                yaml.safe_dump(obj, f)
            cmd += ["-f", file, "--trigger", str(obj["spec"]["triggers"].index(trigger))]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
        except subprocess.TimeoutExpired:
            problems.append(f"{path}: `{shlex.join(cmd)}` did not finish in 60 s")
            continue
        text = out.stdout + out.stderr
        if not re.search(r"^signal\s+\S+", text, re.M) or "invalid trigger metadata" in text:
            problems.append(f"{path}: {meta.get('signal')} trigger not parsed:\n{text.strip()[:400]}")
    report.check(name, problems, f"{len(externals)} triggers")


def metadata_table(report, path=METADATA_DOC):
    """The metadata table's keys are the keys the checks (and the examples) know."""
    name = f"{path}: its table lists exactly the trigger metadata keys"
    with open(path) as f:
        rows = [l for l in f.read().splitlines() if l.startswith("| `")]
    listed = {k for row in rows for k in re.findall(r"`(\w+)`", row.split("|")[1])}
    want = examples.METADATA_KEYS - KEDA_KEYS
    problems = [f"{k} is not in the table" for k in sorted(want - listed)]
    problems += [f"{k} is in the table but not a key the checks know" for k in sorted(listed - want)]
    if not listed:
        problems.append("no table row found")
    report.check(name, problems, f"{len(listed)} keys")


def readme_commands(report, readme_text):
    """The README's test command is the one CI runs; its quickstart trigger is the file its
    `slo-scaler check` line explains."""
    name = "README: the test command is .ci/run's"
    with open(os.path.join(".ci", "run")) as f:
        ci = re.findall(r"^exec (.+)$", f.read(), re.M)
    try:
        two = readme.section(readme_text, "## The two commands")
        shown = [body for lang, body in readme.FENCE.findall(two) if lang == "sh"]
    except readme.ReadmeError as e:
        report.fail(name, e)
    else:
        report.check(name, [] if len(ci) == 1 and shown and any(
            ci[0] in body.splitlines() for body in shown) else
            [f".ci/run runs {ci}; the README's two commands are {shown}"], ci[0] if ci else "")
    name = "README: the quickstart trigger is the file its `slo-scaler check` line explains"
    try:
        quick = readme.section(readme_text, readme.SECTION)
    except readme.ReadmeError as e:
        report.fail(name, e)
        return
    files = re.findall(r"^\s*-f (\S+)", quick, re.M)
    sos = [d for lang, body in readme.FENCE.findall(quick) if lang == "yaml"
           for d in yaml.safe_load_all(body) if isinstance(d, dict) and d.get("kind") == "ScaledObject"]
    if len(files) != 1 or len(sos) != 1:
        report.fail(name, f"want one `-f FILE` and one ScaledObject in {readme.SECTION!r}, "
                          f"got {files} and {len(sos)}")
        return
    with open(files[0]) as f:
        (example,) = [d for d in yaml.safe_load_all(f) if d]

    def triggers(so):
        return [{k: t.get(k) for k in ("type", "metricType", "metadata")} for t in so["spec"]["triggers"]]
    report.check(name, [] if triggers(sos[0]) == triggers(example) else
                 [f"README: {triggers(sos[0])}\n{files[0]}: {triggers(example)}"], files[0])


def commands(files, pattern):
    """Every command in the sh / bash blocks of `files` whose line matches `pattern`, with its
    backslash continuations joined: [(path, words)]."""
    out = []
    for path in files:
        for lang, body in blocks(path):
            if lang not in ("sh", "bash"):
                continue
            for line in re.sub(r"\\\n", " ", body).splitlines():
                line = line.split(" #", 1)[0].strip()
                if re.match(pattern, line):
                    out.append((path, shlex.split(line)))
    return out


def helm_upgrades(report, chart_dir, files, readme_values):
    """Every `helm upgrade … --reuse-values --set …` shown renders on the README's install."""
    name = "docs: every `helm upgrade --reuse-values` shown renders on the README's install"
    shown = commands(files, r"^helm upgrade ")
    if not shown:
        report.fail(name, "no `helm upgrade` command found")
        return
    if readme_values is None:
        report.fail(name, "the README's install values were not parsed")
        return
    problems = []
    for path, words in shown:
        values = copy.deepcopy(readme_values) if "--reuse-values" in words else {}
        for flag, arg in zip(words, words[1:]):
            if flag == "--set":
                values = readme.merge(values, helm.parse_set_string(arg))
        try:
            docs, _ = chart.render(chart_dir, values)
        except Exception as e:  # helm_python raises HelmError subclasses
            problems.append(f"{path}: {shlex.join(words)}: {e}")
            continue
        args = chart.deployment_args(docs)[0]
        for flag, arg in zip(words, words[1:]):
            m = re.match(r"^(tempo|prometheus)\[\d+\]\.url=(.+)$", arg) if flag == "--set" else None
            if m and not any(a.startswith(f"--{m.group(1)}=") and a.endswith(m.group(2)) for a in args):
                problems.append(f"{path}: {arg} renders no --{m.group(1)} arg with that URL: {args}")
    report.check(name, problems, f"{len(shown)} commands")


def help_flags(binary, sub):
    out = subprocess.run([binary, sub, "--help"], capture_output=True, text=True)
    return set(re.findall(r"^\s+(?:-\w, )?(--[a-z][a-z0-9-]+)", out.stdout, re.M))


def flags(report, binary, files):
    """docs/configuration.md lists every flag of `serve`; every command shown uses real flags."""
    path = os.path.join("docs", "configuration.md")
    name = f"{path}: its table lists exactly the flags of `slo-scaler serve`"
    serve = help_flags(binary, "serve") - {"--help", "--version"}
    with open(path) as f:
        rows = [l.split("|")[1] for l in f.read().splitlines() if l.startswith("| `--")]
    listed = {flag for row in rows for flag in re.findall(r"`(--[a-z][a-z0-9-]+)", row)}
    problems = [f"{f} is not in the table" for f in sorted(serve - listed)]
    problems += [f"{f} is in the table but not a flag of `slo-scaler serve`" for f in sorted(listed - serve)]
    if not serve or not listed:
        problems.append(f"found {len(serve)} flags in `serve --help` and {len(listed)} in the table")
    report.check(name, problems, f"{len(listed)} flags")

    name = "docs: every `slo-scaler` command shown uses flags its subcommand has"
    shown = [(p, w[1:]) for p, w in commands(files, r"^slo-scaler [a-z]")]
    shown += [(p, w[w.index("--") + 1:]) for p, w in commands(files, r"^cargo run .* -- [a-z]")]
    if not shown:
        report.fail(name, "no `slo-scaler` or `cargo run --` command found")
        return
    problems, known = [], {}
    for path, words in shown:
        sub = words[0]
        if sub not in known:
            known[sub] = help_flags(binary, sub)
        if not known[sub]:
            problems.append(f"{path}: `slo-scaler {sub}` is not a subcommand")
            continue
        for w in words[1:]:
            flag = w.split("=", 1)[0]
            if flag.startswith("--") and flag not in known[sub]:
                problems.append(f"{path}: {flag} is not a flag of `slo-scaler {sub}`")
    report.check(name, problems, f"{len(shown)} commands: {', '.join(sorted(known))}")


def readme_shape(report, readme_text, max_lines=300, quickstart_by=80):
    """Issue 27: README is a newcomer's path, under 300 lines, with the quickstart's install,
    trigger and `slo-scaler check` within its first 80 lines and a picture before them."""
    lines = readme_text.splitlines()
    problems = [] if len(lines) < max_lines else [f"README.md has {len(lines)} lines, want under {max_lines}"]
    for what, pattern in (("a picture", r"^!\[.*"), ("`helm install`", r"^helm install "),
                          ("the recommended trigger", r"^\s+signal: sloCapacity$"),
                          ("`slo-scaler check`", r"^slo-scaler check ")):
        at = next((i + 1 for i, l in enumerate(lines) if re.match(pattern, l)), None)
        if at is None or at > quickstart_by:
            problems.append(f"{what} is at line {at}, want within the first {quickstart_by}")
    report.check("README: under 300 lines, the quickstart within the first 80", problems,
                 f"{len(lines)} lines")


def run(report, crd_file, readme_text, chart_dir, readme_values):
    files = doc_files()
    links(report, files)
    architecture_tests(report)
    found = parse_blocks(report, files)
    trigger_rules(report, found, crd_file)
    metadata_table(report)
    readme_commands(report, readme_text)
    readme_shape(report, readme_text)
    helm_upgrades(report, chart_dir, files, readme_values)
    return found
