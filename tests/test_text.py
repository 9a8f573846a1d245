import gzip
import random
import re

import numpy as np
import pytest

from rnnkit.data import splits as data
from rnnkit.data import tokenizers as tokenize
from rnnkit.data.tokenizers import basic as basic_tokenizer
from rnnkit.config import DataConfig
from rnnkit.data.splits import encode_texts
from rnnkit.errors import DataError
from rnnkit.data.readers import read_labeled, read_lines, read_texts
from rnnkit.data.tokenizers import cut, get_tokenizer
from rnnkit.data.vocab import PAD, UNK, Vocab
from conftest import write_jsonl


def test_tokenizers():
    text = "I didn't like it.<br /><br />Too LONG!"
    assert get_tokenizer("basic")(text) == ["i", "didn't", "like", "it", ".", "too", "long", "!"]
    assert get_tokenizer("tutorial")(text) == ["i", "didnt", "like", "it", "too", "long"]
    assert get_tokenizer("whitespace", lowercase=False)("a  B\tc") == ["a", "B", "c"]
    assert get_tokenizer("char", lowercase=False)("ab") == ["a", "b"]


# The basic tokenizer as one regex over the whole text. The chunked tokenizer and its
# early-stopping cut must give exactly its tokens.
_REFERENCE_WORD = basic_tokenizer._WORD
_REFERENCE_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_ALPHABET = ["a", "B", "z", "7", "_", "'", "'", ".", ",", "!", "-", "(", "<br />", "<BR/>", " ",
             " ", "  ", "\t", "\n", "\xa0", "\u2003", "\u3000", "é", "İ", "ß", "²", "½",
             "\u0301", "字", "好", "の", "ｶ", "\uff9e", "ก", "\u0e48", "\u0e31", "，", "。", "한",
             "ـ", "\u200b", "don't", "o''k", "'tis", "rock'n'roll", "x'", "'"]


def _reference_basic(text: str) -> list[str]:
    return _REFERENCE_WORD.findall(_REFERENCE_BREAK.sub(" ", text.lower()))


def test_basic_tokenizer_and_its_cuts_match_the_single_regex():
    rng = random.Random(0)
    for trial in range(3000):
        text = "".join(rng.choice(_ALPHABET) for _ in range(rng.randrange(0, 60)))
        full = _reference_basic(text)
        assert get_tokenizer("basic")(text) == full, text
        max_len = rng.choice([1, 2, 3, 5, 8, 13, 40])
        for how in ("head", "tail", "head+tail"):
            kept = get_tokenizer("basic", True, max_len, how)(text)
            assert kept == cut(full, max_len, how), (text, max_len, how)
            assert len(kept) == min(len(full), max_len)


def test_basic_splits_scripts_written_without_spaces_into_characters():
    basic = get_tokenizer("basic")
    assert basic("很快，好吃，味道足") == ["很", "快", "，", "好", "吃", "，", "味", "道", "足"]
    # English words (and Korean, written with spaces) stay whole beside them.
    assert basic("买了iPhone手机 don't 한국어") == ["买", "了", "iphone", "手", "机", "don't",
                                                  "한국어"]
    assert basic("カタカナです") == list("カタカナです")
    # A Thai consonant keeps its vowel and tone marks.
    assert basic("ง่าย") == ["ง่", "า", "ย"]
    # The cut reads only the kept ends, and agrees with cutting everything.
    text = "整体感觉经济实惠不错，下次还会再来"
    for how in ("head", "tail", "head+tail"):
        assert get_tokenizer("basic", True, 5, how)(text) == cut(basic(text), 5, how)


def test_join_tokens_reads_back_as_the_same_tokens():
    basic = get_tokenizer("basic")
    for text in ("很快，好吃。 Good value!", "iPhone手机不错", "ภาษาไทย ok", "plain words, here"):
        tokens = basic(text)
        joined = tokenize.join_tokens(tokens, "basic")
        assert basic(joined) == tokens
    assert tokenize.join_tokens(basic("很快，好吃。 Good!"), "basic") == "很快，好吃。 good !"
    assert tokenize.join_tokens(["a", "b"], "char") == "ab"
    words = ["很快", "好吃", "iPhone"]  # a corpus segmented with spaces, read as it is
    assert get_tokenizer("whitespace")(tokenize.join_tokens(words, "whitespace")) == [
        "很快", "好吃", "iphone"]


def test_spaced_splits_at_whitespace_and_unspaced_scripts_per_character():
    spaced = get_tokenizer("spaced", lowercase=False)
    assert spaced("很快，好吃 iPhone手机") == ["很", "快", "，", "好", "吃", "iPhone", "手", "机"]
    # Pre-tokenized English (WikiText, PTB) reads exactly as whitespace splitting reads it.
    assert spaced("the cat @-@ sat <unk> .") == ["the", "cat", "@-@", "sat", "<unk>", "."]
    assert spaced("ง่าย ok") == ["ง่", "า", "ย", "ok"]
    tight = re.compile(f"[{basic_tokenizer.TIGHT}]")
    alone = re.compile(f"[{basic_tokenizer.TIGHT}][{basic_tokenizer.MARKS}]*")
    rng = random.Random(1)
    for trial in range(2000):
        text = "".join(rng.choice(_ALPHABET) for _ in range(rng.randrange(0, 40)))
        tokens = spaced(text)
        assert "".join(tokens) == "".join(text.split()), text  # nothing lost or added
        assert all(t and not any(c.isspace() for c in t) for t in tokens)
        if not tight.search(text):
            assert tokens == text.split()
        for token in tokens:  # a character of those scripts stands alone, with its marks
            assert not tight.search(token) or alone.fullmatch(token), (text, token)
    for text in ("很快，好吃。 Good value!", "iPhone手机不错", "ภาษาไทย ok", "a b @-@ c"):
        tokens = spaced(text)
        assert spaced(tokenize.join_tokens(tokens, "spaced")) == tokens


def test_jieba_cuts_chinese_into_words_and_reads_the_rest_as_basic_does():
    jieba = get_tokenizer("jieba")
    assert jieba("很快，好吃，味道足") == ["很快", "，", "好吃", "，", "味道", "足"]
    assert jieba("买了iPhone手机 Don't<br />stop ですね") == [
        "买", "了", "iphone", "手机", "don't", "stop", "で", "す", "ね"]
    text = "整体感觉经济实惠不错，下次还会再来"
    tokens = jieba(text)
    assert "".join(tokens) == text and len(tokens) < len(text)  # words, nothing lost
    assert jieba(tokenize.join_tokens(tokens, "jieba")) == tokens
    assert get_tokenizer("jieba", True, 3, "tail")(text) == tokens[-3:]


def test_jieba_without_the_package_says_what_to_install(monkeypatch):
    import sys

    from rnnkit.data.tokenizers import chinese
    from rnnkit.errors import UsageError

    chinese._segmenter.cache_clear()
    monkeypatch.setitem(sys.modules, "jieba", None)
    try:
        with pytest.raises(UsageError, match=r"--tokenizer jieba needs the jieba package: "
                                             r"pip install 'rnnkit\[zh\]'"):
            get_tokenizer("jieba")
    finally:
        chinese._segmenter.cache_clear()


def test_cut_keeps_the_named_ends():
    tokens = list("abcdefghij")
    assert cut(tokens, 4, "head") == list("abcd")
    assert cut(tokens, 4, "tail") == list("ghij")
    assert cut(tokens, 6, "head+tail") == list("ab") + list("ghij")
    assert cut(tokens, 0, "tail") == tokens and cut(tokens, 10, "head") == tokens
    for name in ("tutorial", "whitespace", "char"):
        text = "One two, THREE four<br />five six"
        assert get_tokenizer(name, True, 3, "tail")(text) == get_tokenizer(name)(text)[-3:]


def test_one_cut_for_token_lists_and_id_arrays():
    for how in ("head", "tail", "head+tail"):
        for n in range(12):
            for max_len in range(12):
                ids = cut(np.arange(n, dtype=np.int64), max_len, how)
                assert isinstance(ids, np.ndarray) and ids.dtype == np.int64
                assert ids.tolist() == cut(list(range(n)), max_len, how), (how, n, max_len)
    assert not hasattr(data, "cut_ids")  # the cut is tokenize.cut, nowhere else


def test_encode_texts_keeps_whole_texts_with_max_len_0():
    cfg = DataConfig(max_len=3, truncate="tail")
    vocab = Vocab([PAD, UNK, "a", "b", "c", "d", "e"], [PAD, UNK])
    assert encode_texts(["a b c d e"], cfg, vocab)[0].tolist() == [4, 5, 6]
    whole = encode_texts(["a b c d e"], cfg, vocab, max_len=0)[0]
    assert whole.tolist() == [2, 3, 4, 5, 6]
    assert cut(whole, cfg.max_len, cfg.truncate).tolist() == [4, 5, 6]


def test_vocab_encode_array_matches_encode():
    vocab = Vocab([PAD, UNK, "a", "b"], [PAD, UNK])
    tokens = ["b", "zz", "a", "", "b"]
    assert vocab.encode_array(tokens).tolist() == vocab.encode(tokens) == [3, 1, 2, 1, 3]
    assert vocab.encode_array([]).dtype.name == "int64" and len(vocab.encode_array([])) == 0


def test_vocab_specials_first_and_limits(tmp_path):
    vocab = Vocab.build([["b", "a", "b", "c"], ["b", "a"]], [PAD, UNK], min_freq=2)
    assert vocab.itos == [PAD, UNK, "b", "a"]
    assert vocab.encode(["a", "zzz"]) == [3, vocab.unk_id]
    assert len(Vocab.build([["b", "a", "b", "c"]], [PAD, UNK], max_size=3)) == 3
    wider = vocab.extended(["c", "a", "d", "c", UNK])  # the words it lacks, once, in order
    assert wider.itos == [PAD, UNK, "b", "a", "c", "d"] and wider.singletons == vocab.singletons
    vocab.save(tmp_path / "v.json")
    assert Vocab.load(tmp_path / "v.json").itos == vocab.itos
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DataError, match="bad.json"):
        Vocab.load(tmp_path / "bad.json")


def test_read_formats(tmp_path):
    (tmp_path / "a.csv").write_text('text,label\n"good, really",1\nbad,0\n')
    (tmp_path / "a.tsv").write_text("text\tlabel\ngood\tpos\n")
    write_jsonl(tmp_path / "a.jsonl", [{"text": "good", "label": 1}, {"text": "x", "label": 0}])
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as f:
        f.write('{"review": "fine", "stars": "5"}\n')
    for sub, name in (("pos", "1_9.txt"), ("neg", "2_1.txt"), ("unsup", "3_0.txt")):
        (tmp_path / "tree" / sub).mkdir(parents=True)
        (tmp_path / "tree" / sub / name).write_text(f"text {sub}")
    assert read_labeled(tmp_path / "a.csv").texts == ["good, really", "bad"]
    assert read_labeled(tmp_path / "a.tsv").labels == ["pos"]
    assert read_labeled(tmp_path / "a.jsonl").labels == ["1", "0"]
    assert read_labeled(tmp_path / "b.jsonl.gz", "review", "stars").texts == ["fine"]
    tree = read_labeled(tmp_path / "tree")
    assert sorted(tree.labels) == ["neg", "pos"]  # unsup left out


def test_empty_texts_are_counted_not_dropped_silently(tmp_path):
    write_jsonl(tmp_path / "e.jsonl", [{"text": "ok", "label": 1}, {"text": "  ", "label": 0}])
    out = read_labeled(tmp_path / "e.jsonl")
    assert out.texts == ["ok"]
    assert "1 empty texts" in out.report()


@pytest.mark.parametrize("content,match", [
    ('{"text": "a"}\n', r"e\.jsonl:1: no field 'label'"),
    ('{"text": "a", "label": 1}\n{oops\n', r"e\.jsonl:2: not valid JSON"),
    ('{"text": "a", "label": ""}\n', r"e\.jsonl:1: empty label"),
    ('[1, 2]\n', r"e\.jsonl:1: expected a JSON object"),
])
def test_bad_jsonl_names_line(tmp_path, content, match):
    (tmp_path / "e.jsonl").write_text(content)
    with pytest.raises(DataError, match=match):
        read_labeled(tmp_path / "e.jsonl")


def test_bad_files(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_labeled(tmp_path / "missing.csv")
    (tmp_path / "x.xlsx").write_text("")
    with pytest.raises(DataError, match="unknown format"):
        read_labeled(tmp_path / "x.xlsx")
    (tmp_path / "h.csv").write_text("body,y\nhi,1\n")
    with pytest.raises(DataError, match=r"h\.csv:1: no column 'text'.*body, y"):
        read_labeled(tmp_path / "h.csv")
    (tmp_path / "latin.tsv").write_bytes(b"text\tlabel\ngood\t1\ncaf\xe9\t0\n")
    with pytest.raises(DataError, match="not valid UTF-8"):
        read_labeled(tmp_path / "latin.tsv")
    (tmp_path / "l.txt").write_bytes(b"ok\n\xff\xfe\n")
    with pytest.raises(DataError, match=r"l\.txt:2: not valid UTF-8"):
        read_lines(tmp_path / "l.txt")


def test_read_texts_plain(tmp_path):
    (tmp_path / "t.txt").write_text("one\n\ntwo\n")
    assert read_texts(tmp_path / "t.txt") == ["one", "two"]
