"""What the README tells a new user to run, and the triggers the docs show.

The `helm install` line is parsed out of README.md's "Quickstart" section, the first latency
trigger out of docs/triggers.md's "One ScaledObject per signal", and the fan-out Collector
snippet out of docs/install.md, so the checks follow the docs as they are written, not a copy.
"""

import re
import shlex

import helm_python as helm
import yaml

SECTION = "## Quickstart"
TRIGGERS_DOC = "docs/triggers.md"
TRIGGERS_SECTION = "## One ScaledObject per signal"
INSTALL_DOC = "docs/install.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


class ReadmeError(Exception):
    """The README lacks what the checks read, or uses what they cannot reproduce."""


def section(text, heading=SECTION, where="README.md"):
    start = text.find(heading + "\n")
    if start < 0:
        raise ReadmeError(f"{where} has no {heading!r} section")
    end = text.find("\n## ", start + len(heading))
    return text[start:end if end > 0 else len(text)]


def merge(dst, src):
    """Merges one parsed `--set` into the values, the way Helm's strvals.ParseInto does."""
    if isinstance(dst, dict) and isinstance(src, dict):
        for k, v in src.items():
            dst[k] = merge(dst[k], v) if k in dst else v
        return dst
    if isinstance(dst, list) and isinstance(src, list):
        out = list(dst) + [None] * max(0, len(src) - len(dst))
        for i, v in enumerate(src):
            if v is not None:
                out[i] = merge(out[i], v) if out[i] is not None else v
        return out
    return src


def helm_install(text):
    """(release, namespace, chart path, values) of the README's `helm install` command."""
    for lang, body in FENCE.findall(section(text)):
        if "helm install" not in body:
            continue
        line = re.sub(r"\\\n", " ", body)
        (cmd,) = [l for l in line.splitlines() if l.strip().startswith("helm install")]
        words = shlex.split(cmd)[2:]
        positional, values, namespace = [], {}, "default"
        i = 0
        while i < len(words):
            w = words[i]
            if w in ("-n", "--namespace"):
                namespace, i = words[i + 1], i + 2
            elif w == "--set":
                values, i = merge(values, helm.parse_set_string(words[i + 1])), i + 2
            elif w == "--set-string":
                values, i = merge(values, helm.parse_set_string_values(words[i + 1])), i + 2
            elif w.startswith("-"):
                raise ReadmeError(f"the README's helm install uses {w}, which the check cannot reproduce")
            else:
                positional.append(w)
                i += 1
        if len(positional) != 2:
            raise ReadmeError(f"want `helm install RELEASE CHART`, got {positional}")
        return positional[0], namespace, positional[1], values
    raise ReadmeError(f"no `helm install` command in {SECTION!r}")


def first_trigger(text, signal="latency"):
    """(ScaledObject, its first trigger) of docs/triggers.md's first ScaledObject whose first
    trigger reads `signal` (`text` is that file; the live checks drive a latency trigger that
    names no source, which reads the install's Prometheus)."""
    for lang, body in FENCE.findall(section(text, TRIGGERS_SECTION, TRIGGERS_DOC)):
        if lang != "yaml":
            continue
        for so in (d for d in yaml.safe_load_all(body) if d):
            if so.get("kind") != "ScaledObject":
                continue
            triggers = (so.get("spec") or {}).get("triggers") or []
            if not triggers:
                raise ReadmeError(f"{TRIGGERS_DOC}'s ScaledObject {so.get('metadata')} has no trigger")
            if (triggers[0].get("metadata") or {}).get("signal") == signal:
                return so, triggers[0]
    raise ReadmeError(f"no ScaledObject with a {signal} trigger in {TRIGGERS_DOC}'s {TRIGGERS_SECTION!r}")


def collector_snippets(text):
    """Every YAML block of `text` (docs/install.md) that defines `otlp/slo-scaler-N` exporters."""
    return [yaml.safe_load(body) for lang, body in FENCE.findall(text)
            if lang == "yaml" and "otlp/slo-scaler-0" in body]
