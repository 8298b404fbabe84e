#!/usr/bin/python3
"""Write test/golden/peft-config-fields.json: the keys HF PEFT writes to adapter_config.json.

Run from anywhere:  /usr/bin/python3 scripts/goldens/peft_config_fields.py [--check]

Reads PEFT's sources from the local mirror (`fetch github:huggingface/peft` puts it at
/work/.mirror/huggingface+peft/repo) at the pinned release tag, with `git show` and Python's `ast`;
it never imports peft. For each peft_type peftkit writes, the fields of its config dataclass, with the
inherited ones (PeftConfigMixin → PeftConfig → PromptLearningConfig or LycorisConfig → the method's class), in the
order `dataclasses.asdict` gives them, minus the keys the class's `to_dict` pops (LoraConfig drops
`runtime_config`). `PeftConfigMixin.save_pretrained` writes exactly that dict (sets as lists).
Each field's default is recorded as its Python source, for reading only.

--check: fail if the committed file differs from what the mirror gives (nothing is written).
"""
import ast
import json
import os
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
OUT = os.path.join(ROOT, "test", "golden", "peft-config-fields.json")
PEFT_MIRROR = os.environ.get("PEFT_MIRROR", "/work/.mirror/huggingface+peft/repo")
# The newest stable release in the mirror when this was pinned. PEFT releases write their plain
# __version__ as peft_version (dev installs append "@<commit>").
PEFT_TAG = "v0.20.0"
PEFT_VERSION = "0.20.0"

# peft_type → (source file, dataclass)
PEFT_TYPES = {
    "LORA": ("src/peft/tuners/lora/config.py", "LoraConfig"),
    "IA3": ("src/peft/tuners/ia3/config.py", "IA3Config"),
    "LN_TUNING": ("src/peft/tuners/ln_tuning/config.py", "LNTuningConfig"),
    "PROMPT_TUNING": ("src/peft/tuners/prompt_tuning/config.py", "PromptTuningConfig"),
    "PREFIX_TUNING": ("src/peft/tuners/prefix_tuning/config.py", "PrefixTuningConfig"),
    "HRA": ("src/peft/tuners/hra/config.py", "HRAConfig"),
    "VERA": ("src/peft/tuners/vera/config.py", "VeraConfig"),
    "OFT": ("src/peft/tuners/oft/config.py", "OFTConfig"),
    "BOFT": ("src/peft/tuners/boft/config.py", "BOFTConfig"),
    "LOHA": ("src/peft/tuners/loha/config.py", "LoHaConfig"),
    "LOKR": ("src/peft/tuners/lokr/config.py", "LoKrConfig"),
    "ADALORA": ("src/peft/tuners/adalora/config.py", "AdaLoraConfig"),
    "FOURIERFT": ("src/peft/tuners/fourierft/config.py", "FourierFTConfig"),
    "POLY": ("src/peft/tuners/poly/config.py", "PolyConfig"),
}
BASE_FILE = "src/peft/config.py"
# Shared config bases outside the method's file (LoHa/LoKr inherit LycorisConfig's rank/alpha patterns,
# AdaLoRA inherits LoraConfig).
SHARED_FILES = ["src/peft/tuners/lycoris_utils.py", "src/peft/tuners/lora/config.py"]


def git(*args):
    return subprocess.run(["git", "-C", PEFT_MIRROR, *args], capture_output=True, text=True, check=True).stdout


def is_classvar(annotation):
    a = annotation.value if isinstance(annotation, ast.Subscript) else annotation
    return (isinstance(a, ast.Name) and a.id in ("ClassVar", "InitVar")) or (
        isinstance(a, ast.Attribute) and a.attr in ("ClassVar", "InitVar"))


def default_source(value):
    """The default of `x: T = value` as source: field(default=...) / field(default_factory=...) / a plain value."""
    if value is None:
        return None
    if isinstance(value, ast.Call) and getattr(value.func, "id", getattr(value.func, "attr", None)) == "field":
        for kw in value.keywords:
            if kw.arg == "default":
                return ast.unparse(kw.value)
            if kw.arg == "default_factory":
                return ast.unparse(kw.value) + "()"
        return None
    return ast.unparse(value)


def classes(path):
    """name → (base names, [(field, default source)], keys popped in to_dict) for the dataclasses in a file."""
    out = {}
    for node in ast.parse(git("show", f"{PEFT_TAG}:{path}")).body:
        if not isinstance(node, ast.ClassDef):
            continue
        fields, popped = [], []
        for s in node.body:
            if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name) and not is_classvar(s.annotation):
                fields.append((s.target.id, default_source(s.value)))
            if isinstance(s, ast.FunctionDef) and s.name == "to_dict":
                for c in ast.walk(s):
                    if (isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute) and c.func.attr == "pop"
                            and c.args and isinstance(c.args[0], ast.Constant)):
                        popped.append(c.args[0].value)
        out[node.name] = ([ast.unparse(b) for b in node.bases], fields, popped)
    return out


def config_fields(path, cls):
    """asdict order: base-class fields first; a field redeclared in a subclass keeps its first position
    and takes the subclass's default."""
    known = {**classes(BASE_FILE), **{k: v for f in SHARED_FILES for k, v in classes(f).items()}, **classes(path)}
    chain = []
    c = cls
    while c in known:
        chain.append(c)
        bases = [b for b in known[c][0] if b in known]
        c = bases[0] if bases else None
    order, defaults, popped = [], {}, []
    for c in reversed(chain):
        for name, dflt in known[c][1]:
            if name not in defaults:
                order.append(name)
            defaults[name] = dflt
        popped += known[c][2]
    return {
        "class": cls,
        "source": path,
        "inherits": list(reversed(chain[1:])),
        "fields": [f for f in order if f not in popped],
        "stripped_on_save": popped,
        "defaults": {f: defaults[f] for f in order if f not in popped},
    }


def build():
    commit = git("rev-parse", f"{PEFT_TAG}^{{commit}}").strip()
    version = [ln for ln in git("show", f"{PEFT_TAG}:setup.py").splitlines() if ln.startswith("VERSION = ")]
    if version != [f'VERSION = "{PEFT_VERSION}"']:
        sys.exit(f"{PEFT_TAG}: setup.py says {version}, expected {PEFT_VERSION}")
    return {
        "peft_version": PEFT_VERSION,
        "peft_tag": PEFT_TAG,
        "peft_commit": commit,
        "generated_by": "scripts/goldens/peft_config_fields.py (ast over PEFT's sources; peft is not imported)",
        # What every PEFT config writes (PeftConfigMixin + PeftConfig); peftkit's own types write these too.
        "base_fields": config_fields(BASE_FILE, "PeftConfig")["fields"],
        "types": {t: config_fields(path, cls) for t, (path, cls) in PEFT_TYPES.items()},
    }


def main():
    if not os.path.isdir(PEFT_MIRROR):
        sys.exit(f"no PEFT mirror at {PEFT_MIRROR} (set PEFT_MIRROR)")
    text = json.dumps(build(), indent=2) + "\n"
    if "--check" in sys.argv:
        with open(OUT) as f:
            if f.read() != text:
                sys.exit(f"{OUT} is not what {PEFT_TAG} gives: rerun without --check")
        print(f"{OUT}: up to date")
        return
    with open(OUT, "w") as f:
        f.write(text)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
