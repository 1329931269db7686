"""The tokenizer test corpus: varied strings, deterministic (a fixed seed).

texts() gives valid Unicode strings (node and the reference encoder can hold
them): hand-picked cases, then seeded mixtures of fragments from every group,
then one text of 1 MB. invalid_utf8() gives byte strings that are not UTF-8,
for the Python reference (node strings cannot hold them).
"""

import random

PROSE = [
    "Hello world", "hello world", "Hello, world!", "When Mary and John went to the store, "
    "John gave a drink to", "The quick brown fox jumps over the lazy dog.",
    "It was the best of times, it was the worst of times.",
    "In 1492, Columbus sailed the ocean blue.", "She sells sea shells by the sea shore.",
    "A man, a plan, a canal: Panama", "Call me Ishmael.",
    "To be, or not to be, that is the question:", "The cat sat on the mat.",
    "Colorless green ideas sleep furiously.", "Mr. and Mrs. Dursley, of number four, Privet "
    "Drive, were proud to say that they were perfectly normal, thank you very much.",
    "Induction heads complete the pattern [A][B] ... [A] -> [B].",
    "The Eiffel Tower is located in the city of", "Attention is all you need",
    "GPT-2 was trained on WebText.", "e.g. i.e. etc. vs. Dr. St. Jr.",
    "UPPER CASE WORDS AND lower case words", "CamelCaseIdentifiersAreCommon",
    "snake_case_identifiers_too", "kebab-case-words-here", "OneTwoThree four FIVE",
]
CODE = [
    "def f(x):\n    return x**2\n", "for (int i = 0; i < n; i++) {\n\tsum += a[i];\n}",
    "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 42); }",
    "if x == 1 and y != 2 or not z:", "const add = (a, b) => a + b;",
    "SELECT * FROM users WHERE id = 42;", "<html><body><p>Hi</p></body></html>",
    "{\"key\": [1, 2, 3], \"nested\": {\"a\": null}}", "x <<= 2; y >>= 3; z ^= ~w;",
    "arr[i][j] = arr[j][i];", "import numpy as np\nnp.zeros((3, 4))",
    "fn main() { println!(\"{:?}\", vec![1, 2]); }", "$ ls -la | grep '^d' > out.txt",
    "a->b->c; p && q || !r;", "0x1F 0b1010 0o777 1e-5 3.14159 -2.5E+10",
    "// comment\n/* block */\n# hash\n-- dash", "    indented four\n        eight\n",
    "@decorator\nclass A(B, metaclass=M):\n    pass", "print(f'{x!r:>10}')",
    "git commit -m \"fix: don't panic\"",
]
NUMBERS = [
    "0", "1", "12", "123", "1234", "12345", "123456789", "3.14159265358979",
    "1,000,000", "2024-01-15", "12:34:56", "+1 (555) 123-4567", "$19.99", "50%",
    "1st 2nd 3rd 4th", "10^6", "007", "3/4", "1.2.3.4", "v1.10.3",
    "٣٤٥", "०१२३", "½ ¼ ¾", "Ⅻ Ⅳ", "²³¹", "①②③", "一二三 四",
]
PUNCT = [
    "!!!", "???", "...", "?!?!", "---", "___", "***", "~~~", "@@@", "###", "$$$",
    "%%%", "^^^", "&&&", "(((", ")))", "[[[", "]]]", "{{{", "}}}", "|||", "\\\\\\",
    "///", "<<<>>>", "\"\"\"", "'''", "```", ",,,", ";;;", "::::", "a,,b , ,",
    ",a,b,", ", , ,", "a, ,b", "—–-", "“quoted” ‘single’", "«guillemets»", "¿Qué? ¡Sí!",
    "•·●", "→←↑↓", "©®™", "§¶†‡", "∀x∈ℝ: x²≥0", "±×÷≠≈∞", "<|endoftext|>",
    "<|endoftext|> <|endoftext|>", "<|end of text|>", "|>", "<|",
]
CONTRACTIONS = [
    "I'm", "you're", "he's", "she'd", "we've", "they'll", "it's", "can't", "don't",
    "won't", "isn't", "I'M", "YOU'RE", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d",
    "'S", "'tis", "'twas", "rock'n'roll", "o'clock", "y'all'd've", "'sup", "don''t",
    "it 's", "' s", "''s", "’s", "it’s", "l'homme", "aujourd'hui", "'d'd'd", "'lll",
    "'rev", "'ver", "x'sy",
]
SPACES = [
    "", " ", "  ", "   ", "\t", "\n", "\r\n", "\n\n", "\n\n\n", " \n", "\n ", " \t ",
    "a ", "a  ", "a   ", " a", "  a", "   a", "a b", "a  b", "a   b", "a\tb", "a\nb",
    "a\n\nb", "a \n b", "a\t\tb", "a \t b", "a\r\nb", "trailing   ", "\ttabbed",
    "line one\nline two\n", "para\n\n\npara", "  leading and trailing  ",
    "a\u00a0b", "a\u3000b", "a\u2028b", "a\u2003b", "a\ufeffb", "a\u0085b", "a\u000bb",
    "a\u000cb", "a\u001cb", "a\u200bb", "\u00a0\u00a0x", "x\u00a0\u00a0", " \u00a0 x",
    "\n\u00a0x", "x \n", "x\n ", "x \t\n  ",
]
LATIN = [
    "café", "naïve", "résumé", "über", "Straße", "Ångström", "façade", "jalapeño",
    "Zürich", "Kraków", "Đorđe", "Ærø", "œuvre", "ﬁne ﬂow", "Ǆemal", "ǅ ǆ",
    "İstanbul ıi", "ŁÓDŹ", "Crème brûlée", "São Paulo", "Ñandú", "El Niño", "Mötley Crüe",
    "e\u0301", "cafe\u0301", "A\u030a", "n\u0303",
]
SCRIPTS = [
    "日本語のテキスト", "中文字符", "漢字かなカナ", "한국어 텍스트", "こんにちは、世界！",
    "你好，世界。", "Привет, мир!", "Γειά σου Κόσμε", "مرحبا بالعالم", "שלום עולם",
    "नमस्ते दुनिया", "สวัสดีชาวโลก", "Բարեւ աշխարհ", "გამარჯობა", "ሰላም ዓለም",
    "ᚠᚢᚦᚨᚱᚲ", "𐌰𐌱𐌲", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𝟘𝟙𝟚", "ℕℤℚℝℂ", "Ⓐⓑⓒ", "ｆｕｌｌｗｉｄｔｈ", "ｶﾀｶﾅ",
    "ǂʼǃ", "ʻokina", "ᐊᐃᐅ", "ꦲꦏ꧀ꦱꦫ", "𓀀𓀁", "‎\u200e\u200f",
]
EMOJI = [
    "😀", "😀😃😄", "👍🏽", "👨‍👩‍👧‍👦", "🇺🇸🇫🇷", "❤️", "☺︎", "✨ sparkle ✨",
    "I ❤ NY", "🙂🙃", "🚀 launch", "emoji😀inside", "🤖🧠", "#️⃣ 1️⃣", "🏳️‍🌈",
    "💯💯💯", "🍕 and 🍺", "a😀b😀c", " 😀", "😀 ",
]
WORDS = ("the of and to in is that for it as was with be by on not he this are or his "
         "from at which but have an they you were her she there had one all we can will "
         "induction head attention circuit token model layer residual stream").split()


def _mix(rng, pools, n):
    """One string of n fragments drawn from the pools, joined by varied glue."""
    glue = ["", " ", "  ", "\n", "\t", ", ", ". ", " - ", "\n\n", "'"]
    parts = []
    for _ in range(n):
        pool = rng.choice(pools)
        parts.append(rng.choice(pool))
        parts.append(rng.choice(glue))
    return "".join(parts)


def texts():
    """The valid strings: every hand-picked case, then 400 seeded mixtures,
    then the 1 MB text (last)."""
    groups = [PROSE, CODE, NUMBERS, PUNCT, CONTRACTIONS, SPACES, LATIN, SCRIPTS, EMOJI]
    out = [t for g in groups for t in g]
    rng = random.Random(20240509)
    for _ in range(300):
        out.append(_mix(rng, groups, rng.randint(1, 12)))
    for _ in range(100):  # prose-like runs of common words, repeated spaces here and there
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 40))]
        out.append(" ".join(w if rng.random() > 0.1 else w + " " for w in words))
    out.append(big_text(1 << 20, rng))
    return out


def big_text(size, rng=None):
    """A text of about `size` bytes mixing every group (prose most of all)."""
    rng = rng or random.Random(7)
    groups = [PROSE * 6, WORDS, CODE, NUMBERS, PUNCT, CONTRACTIONS, SPACES, LATIN, SCRIPTS,
              EMOJI]
    parts, n = [], 0
    while n < size:
        s = _mix(rng, groups, 8)
        parts.append(s)
        n += len(s.encode("utf-8"))
    return "".join(parts)


def invalid_utf8():
    """Byte strings that are not valid UTF-8, each with valid text around."""
    bad = [b"\xff", b"\xfe\xff", b"\x80", b"\xbf\xbf", b"\xc0\xaf", b"\xc1\xbf", b"\xe0\x80\xaf",
           b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80",
           b"\xf8\x88\x80\x80\x80", b"\xe2\x82", b"\xf0\x9f\x98", b"\xc3", b"\xe2\x28\xa1",
           b"\xf0\x28\x8c\x28", b"\x00", b"a\x00b"]
    around = [(b"", b""), (b"a", b"b"), (b" ", b" "), (b"word", b""), (b"", b" word"),
              (b"12", b"34"), (b"\xc3\xa9", b"\xe2\x82\xac"), (b"'", b"s"), (b"\n", b"\n")]
    out = [pre + b + post for b in bad for pre, post in around]
    rng = random.Random(99)
    for _ in range(60):
        out.append(bytes(rng.randrange(256) for _ in range(rng.randint(1, 40))))
    return out
