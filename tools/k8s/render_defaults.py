#!/usr/bin/env python3
"""Renders the cohort-operator Helm chart without helm (not packaged for Debian).

Usage: render_defaults.py CHART_DIR OUT_DIR [--release NAME] [--namespace NS]
                          [--set key.path=value ...]

Writes OUT_DIR/<template>.yaml for every templates/*.yaml (like `helm template`,
with a `# Source:` line) and copies crds/*.yaml to OUT_DIR/crds/. Values are the
chart's values.yaml plus --set overrides (values parsed as YAML scalars).

This is a small subset of Go templates + Sprig, enough for this chart:
  {{ .Values.a.b }}  {{ .Release.Name|Namespace|Service }}  {{ .Chart.Name|Version|AppVersion }}
  {{ include "name" . }}  {{ define "name" }}...{{ end }}  {{/* comments */}}
  {{ if COND }}...{{ else }}...{{ end }}  with COND a value, `not X`, or `eq X Y`
  pipes: quote, default D, trunc N, trimSuffix S, toYaml, nindent N, indent N
  {{- and -}} whitespace trimming.
Anything else is an error, so templates cannot silently drift outside it.
"""
import argparse
import json
import os
import re
import shlex
import sys

import yaml

TOKEN = re.compile(r"\{\{(-?)(\s*)(.*?)(\s*)(-?)\}\}", re.S)


class TemplateError(Exception):
    pass


def tokenize(src, where):
    """Returns a list of ('text', s) and ('action', s) with trimming applied."""
    out = []
    pos = 0
    for m in TOKEN.finditer(src):
        text = src[pos:m.start()]
        if m.group(1) == "-":
            if not m.group(2):
                raise TemplateError(f"{where}: '{{{{-' must be followed by a space")
            text = text.rstrip(" \t\r\n")
        if out and out[-1][0] == "trim_next":
            out.pop()
            text = text.lstrip(" \t\r\n")
        out.append(("text", text))
        body = m.group(3)
        if m.group(5) == "-" and not m.group(4):
            raise TemplateError(f"{where}: '-}}}}' must be preceded by a space")
        out.append(("action", body))
        if m.group(5) == "-":
            out.append(("trim_next", None))
        pos = m.end()
    tail = src[pos:]
    if out and out[-1][0] == "trim_next":
        out.pop()
        tail = tail.lstrip(" \t\r\n")
    out.append(("text", tail))
    return out


def parse(tokens, where):
    """Builds a tree: list of nodes ('text', s) | ('expr', s) | ('if', cond, then, else)
    | ('define', name, body). Returns (nodes, defines)."""
    defines = {}

    def block(i, stop):
        nodes = []
        while i < len(tokens):
            kind, val = tokens[i]
            if kind == "text":
                if val:
                    nodes.append(("text", val))
                i += 1
                continue
            if val.startswith("/*"):
                if not val.endswith("*/"):
                    raise TemplateError(f"{where}: unterminated comment")
                i += 1
                continue
            word = val.split(None, 1)[0] if val else ""
            if word in ("end", "else"):
                if word not in stop:
                    raise TemplateError(f"{where}: unexpected '{val}'")
                return nodes, i
            if word == "if":
                then, j = block(i + 1, ("end", "else"))
                other = []
                if tokens[j][1] == "else":
                    other, j = block(j + 1, ("end",))
                elif tokens[j][1].strip() != "end":
                    raise TemplateError(f"{where}: unsupported '{tokens[j][1]}'")
                nodes.append(("if", val[2:].strip(), then, other))
                i = j + 1
                continue
            if word == "define":
                name = shlex.split(val)[1]
                body, j = block(i + 1, ("end",))
                defines[name] = body
                i = j + 1
                continue
            if word in ("range", "with", "template", "block", "tpl", "required", "lookup"):
                raise TemplateError(f"{where}: '{word}' is not supported by render_defaults.py")
            nodes.append(("expr", val))
            i += 1
        if stop:
            raise TemplateError(f"{where}: missing {{{{ end }}}}")
        return nodes, i

    nodes, _ = block(0, ())
    return nodes, defines


def truthy(v):
    return not (v is None or v is False or v == 0 or v == "" or v == {} or v == [])


def to_yaml(v):
    if v is None:
        return "null"
    if v == {}:
        return "{}"
    if v == []:
        return "[]"
    return yaml.safe_dump(v, default_flow_style=False, sort_keys=True).rstrip("\n")


class Renderer:
    def __init__(self, values, release, chart, defines):
        self.ctx = {"Values": values, "Release": release, "Chart": chart}
        self.defines = defines

    def lookup(self, path):
        if path == ".":
            return self.ctx
        cur = self.ctx
        for part in path.lstrip(".").split("."):
            if isinstance(cur, dict) and part in cur:
                cur = cur[part]
            else:
                return None
        return cur

    def term(self, word):
        if word.startswith("."):
            return self.lookup(word)
        if word.startswith('"'):
            return json.loads(word)
        if re.fullmatch(r"-?\d+", word):
            return int(word)
        if word in ("true", "false"):
            return word == "true"
        raise TemplateError(f"unsupported term '{word}'")

    def call(self, fn, args, piped, has_piped):
        vals = [self.term(a) for a in args]
        if has_piped:
            vals.append(piped)
        if fn == "include":
            name, _ctx = vals
            if name not in self.defines:
                raise TemplateError(f"include of undefined template '{name}'")
            return self.render(self.defines[name])
        if fn == "quote":
            (v,) = vals
            return json.dumps("" if v is None else str(v))
        if fn == "default":
            d, v = vals
            return v if truthy(v) else d
        if fn == "trunc":
            n, s = vals
            return str(s)[:n]
        if fn == "trimSuffix":
            suf, s = vals
            s = str(s)
            return s[: -len(suf)] if suf and s.endswith(suf) else s
        if fn == "toYaml":
            (v,) = vals
            return to_yaml(v)
        if fn in ("nindent", "indent"):
            n, s = vals
            pad = " " * n
            body = "\n".join(pad + line for line in str(s).split("\n"))
            return ("\n" if fn == "nindent" else "") + body
        if fn == "not":
            (v,) = vals
            return not truthy(v)
        if fn == "eq":
            a, b = vals
            return a == b
        raise TemplateError(f"unsupported function '{fn}'")

    def pipeline(self, expr):
        stages = [shlex.split(s, posix=False) for s in expr.split("|")]
        value, has = None, False
        for words in stages:
            if not words:
                raise TemplateError(f"empty pipeline stage in '{expr}'")
            head = words[0]
            if head.startswith(".") or head.startswith('"') or re.fullmatch(r"-?\d+", head):
                if has or len(words) != 1:
                    raise TemplateError(f"unsupported pipeline '{expr}'")
                value = self.term(head)
            else:
                value = self.call(head, words[1:], value, has)
            has = True
        return value

    def render(self, nodes):
        out = []
        for node in nodes:
            if node[0] == "text":
                out.append(node[1])
            elif node[0] == "expr":
                v = self.pipeline(node[1])
                if isinstance(v, bool):
                    v = "true" if v else "false"
                out.append("" if v is None else str(v))
            elif node[0] == "if":
                out.append(self.render(node[2] if truthy(self.pipeline(node[1])) else node[3]))
        return "".join(out)


def set_value(values, assignment):
    key, _, raw = assignment.partition("=")
    cur = values
    parts = key.split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = yaml.safe_load(raw) if raw != "" else ""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("chart")
    ap.add_argument("out")
    ap.add_argument("--release", default="cohort-operator")
    ap.add_argument("--namespace", default="cohort-system")
    ap.add_argument("--set", action="append", default=[])
    a = ap.parse_args()

    with open(os.path.join(a.chart, "Chart.yaml")) as f:
        chart_meta = yaml.safe_load(f)
    with open(os.path.join(a.chart, "values.yaml")) as f:
        values = yaml.safe_load(f) or {}
    for s in a.set:
        set_value(values, s)
    chart = {"Name": chart_meta["name"], "Version": chart_meta["version"],
             "AppVersion": chart_meta.get("appVersion", "")}
    release = {"Name": a.release, "Namespace": a.namespace, "Service": "Helm"}

    tdir = os.path.join(a.chart, "templates")
    defines, bodies = {}, {}
    for name in sorted(os.listdir(tdir)):
        path = os.path.join(tdir, name)
        with open(path) as f:
            nodes, defs = parse(tokenize(f.read(), path), path)
        defines.update(defs)
        if not name.startswith("_") and name.endswith((".yaml", ".yml")):
            bodies[name] = nodes

    os.makedirs(a.out, exist_ok=True)
    r = Renderer(values, release, chart, defines)
    for name, nodes in bodies.items():
        try:
            text = r.render(nodes)
        except TemplateError as e:
            raise TemplateError(f"{name}: {e}") from None
        docs = [d for d in re.split(r"^---[ \t]*$", text, flags=re.M) if d.strip()]
        if not docs:
            continue
        src = f"{chart['Name']}/templates/{name}"
        with open(os.path.join(a.out, name), "w") as f:
            f.write("---\n".join(f"# Source: {src}\n{d.strip(chr(10))}\n" for d in docs))
    crds = os.path.join(a.chart, "crds")
    if os.path.isdir(crds):
        os.makedirs(os.path.join(a.out, "crds"), exist_ok=True)
        for name in sorted(os.listdir(crds)):
            with open(os.path.join(crds, name)) as f, \
                 open(os.path.join(a.out, "crds", name), "w") as g:
                g.write(f.read())


if __name__ == "__main__":
    try:
        main()
    except TemplateError as e:
        print(f"render_defaults.py: {e}", file=sys.stderr)
        sys.exit(1)
