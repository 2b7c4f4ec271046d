"""What the README tells a new user to run: its `helm install` line and its first ScaledObject.

Both are parsed out of README.md's "Wire it into KEDA" section, so the checks follow the README
as it is written, not a copy of it.
"""

import re
import shlex

import helm_python as helm
import yaml

SECTION = "## Wire it into KEDA"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


class ReadmeError(Exception):
    """The README lacks what the checks read, or uses what they cannot reproduce."""


def section(text):
    start = text.find(SECTION)
    if start < 0:
        raise ReadmeError(f"README.md has no {SECTION!r} section")
    end = text.find("\n## ", start + len(SECTION))
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


def first_trigger(text):
    """(ScaledObject, its first trigger) of the first YAML block in the section."""
    for lang, body in FENCE.findall(section(text)):
        if lang != "yaml":
            continue
        docs = [d for d in yaml.safe_load_all(body) if d]
        if not docs or docs[0].get("kind") != "ScaledObject":
            continue
        so = docs[0]
        triggers = (so.get("spec") or {}).get("triggers") or []
        if not triggers:
            raise ReadmeError("the README's first ScaledObject has no trigger")
        return so, triggers[0]
    raise ReadmeError(f"no ScaledObject YAML block in {SECTION!r}")


def collector_snippets(text):
    """Every YAML block of the whole README that defines `otlp/slo-scaler-N` exporters."""
    return [yaml.safe_load(body) for lang, body in FENCE.findall(text)
            if lang == "yaml" and "otlp/slo-scaler-0" in body]
