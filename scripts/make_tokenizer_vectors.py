#!/usr/bin/env python3
"""Make test vectors for recur's byte-level BPE tokenizer (coordinator/recur_tokenizer_bpe.c).

Needs the Hugging Face `tokenizers` package (no network). Run from anywhere:

    python3 scripts/make_tokenizer_vectors.py TOKENIZER_JSON OUT_JSONL

e.g. with ../shared/fixtures/tokenizers/20B_tokenizer.json (GPT-NeoX-20B, used by xLSTM 7B) and
tests/fixtures/tokenizer-neox-vectors.jsonl. The strings are fixed lists plus random ones from
a fixed seed, so the output only changes when this script or the `tokenizers` version does.

Output, one JSON object per line:
  first line  {"_meta": {"tokenizers": VERSION, "tokenizer_json_sha256": ..., "seed": ..., "count": N}}
  then        {"text": STR, "hex": UTF-8 bytes of STR in hex, "ids": [...], "decoded_hex": ...}
where ids = Tokenizer.encode(text).ids (the ByteLevel post-processor adds nothing) and
decoded_hex = the UTF-8 bytes of Tokenizer.decode(ids, skip_special_tokens=True), which is what
recur's decode must return (recur decodes special tokens to nothing). "hex" is there because
C JSON parsers stop strings at an escaped NUL.

Invalid UTF-8 is not covered: HF takes a Python str, so there is no HF answer for raw bytes;
the C test checks recur's documented rule for them (round trip) instead.
"""
import hashlib
import json
import random
import sys

SEED = 20240607

PROSE = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
    "foolishness, it was the epoch of belief, it was the epoch of incredulity.",
    "In 1905, Albert Einstein published four groundbreaking papers. These outlined the theory of the "
    "photoelectric effect, explained Brownian motion, introduced special relativity, and demonstrated "
    "mass-energy equivalence.",
    "Recurrent neural networks process sequences one element at a time, carrying a hidden state forward.\n"
    "Transformers, by contrast, attend to every previous token at each step.",
    "Dear Sir or Madam,\n\nI am writing to inquire about the position advertised on your website. "
    "Please find my CV attached.\n\nYours faithfully,\nJ. Smith",
    "Q: What is the capital of France?\nA: Paris.\n\nQ: What is 2 + 2?\nA: 4.",
    "\"Well,\" she said, \"I don't know -- maybe we'll see; maybe we won't!\" (He laughed.)",
    "e.g. i.e. etc. Mr. Mrs. Dr. St. U.S.A. a.m. p.m. vs. approx.",
    "URL: https://example.com/path/to/page?query=1&lang=en#section-2 and email foo.bar+baz@example.org",
    "Price: $1,299.99 (was $1,499.00) -- save 13%! Offer ends 31/12/2024 at 23:59 UTC.",
    "   leading spaces and trailing spaces   ",
    "\tTabbed\tcolumns\tof\tdata\n1\t2\t3\t4\n",
    "Line one\r\nLine two\r\nLine three\r\n",
    "ALL CAPS SENTENCE WITH SHOUTING!!! AND MORE???",
    "mIxEd CaSe WoRdS aNd camelCaseIdentifiers and snake_case_names and kebab-case-names",
    "The year 2023 had 365 days; 2024 has 366. Pi is about 3.14159265358979323846.",
]

UNICODE = [
    # CJK, kana, Hangul
    "你好，世界！这是一个测试。",
    "日本語のテキスト：ひらがな、カタカナ、漢字。",
    "한국어 텍스트입니다. 안녕하세요!",
    "\u1100\u1161\u11a8",                      # conjoining jamo: NFC composes to 각
    "\u1112\u1161\u11ab\u1100\u1173\u11af",    # 한글 decomposed
    # RTL
    "مرحبا بالعالم، هذا اختبار.",
    "שלום עולם, זה מבחן.",
    "\u0627\u0644\u0639\u064e\u0631\u064e\u0628\u0650\u064a\u0651\u064e\u0629",  # Arabic with harakat
    # Indic and others
    "नमस्ते दुनिया, यह एक परीक्षण है।",
    "\u0915\u093c \u0958",                     # U+0958 is composition-excluded: NFC decomposes it
    "বাংলা ভাষা",
    "தமிழ் மொழி",
    "ภาษาไทยไม่มีช่องว่างระหว่างคำ",
    "ქართული ენა",
    "Հայերեն լեզու",
    "አማርኛ ቋንቋ",
    # Cyrillic, Greek
    "Привет, мир! Это тест.",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Ελληνικά: Καλημέρα κόσμε",
    "\u03b1\u0301\u03b5\u0301\u03b7\u0301",     # decomposed tonos
    "\u1f00\u0345 \u03b1\u0313\u0345",          # Greek with psili + ypogegrammeni
    # Latin with combining marks, precomposed and decomposed
    "café naïve résumé façade Zürich São Paulo",
    "cafe\u0301 nai\u0308ve re\u0301sume\u0301 fac\u0327ade Zu\u0308rich Sa\u0303o Paulo",
    "e\u0301",
    "\u00e9",
    "A\u030a \u00c5 \u212b",                    # A+ring, Å, Angstrom sign (singleton -> Å)
    "\u2126 \u03a9",                            # Ohm sign -> Omega
    "a\u0323\u0302 a\u0302\u0323 \u1ead",       # canonical reordering: both -> ậ
    "Vi\u1ec7t Nam, ti\u1ebfng Vi\u00ea\u0323t",
    "o\u0308\u0304 \u022b",
    "\u0041\u0301\u0301\u0301",                 # stacked marks
    "\u0301leading combining mark",
    "x\u0336s\u0336t\u0336r\u0336i\u0336k\u0336e\u0336",
    "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349\u035a\u032f\u031e\u0320\u034dA\u036b\u0357\u0334\u0362\u0335\u031c\u0330\u0354L\u0368\u0367\u0369\u0358\u0320G\u0311\u0357\u030e\u0305\u035b\u0341\u0334\u033b\u0348\u034d\u0354\u0339O\u0342\u030c\u030c\u0358\u0328\u0335\u0339\u033b\u031d\u0333",
    "\ufb01 \ufb02 \u2460 \u00bd \u2163 \u00b2 \u2082",  # compatibility chars: NFC keeps them
    "\uff21\uff22\uff23 \uff11\uff12\uff13 \uff01",      # fullwidth
    # emoji
    "😀😃😄😁 smile",
    "👍🏽 👋🏿 🤙🏻",
    "👨\u200d👩\u200d👧\u200d👦 family",
    "🏳\ufe0f\u200d🌈 🏴\u200d☠\ufe0f",
    "🇺🇸🇯🇵🇩🇪🇫🇷🇬🇧 flags",
    "1\ufe0f\u20e3 #\ufe0f\u20e3 *\ufe0f\u20e3",
    "🧑🏿\u200d💻 coding, 👩🏼\u200d🔬 science",
    "❤️ ♥ ☺️ ✌🏾",
    # symbols, math, misc
    "∀x ∈ ℝ: x² ≥ 0 ⇒ √(x²) = |x|",
    "→ ← ↑ ↓ ↔ ⟶ ⟹",
    "© ® ™ § ¶ † ‡ • … ‰ ′ ″",
    "€100 £50 ¥1000 ₹500 ₿0.01",
    "\u00ab guillemets \u00bb \u201cquotes\u201d \u2018single\u2019 \u201elow\u201c",
    "\ufeffBOM at start",
    "zero\u200bwidth\u200cnon\u200djoiner",
    "\ue000\uf8ff private use",
    "\ufffd replacement char",
    "\uffff\ufffe noncharacters",
    "\U0010fffd \U000e0001 \U0001d11e \U0001f600",
    "\u0378\u0379 unassigned",
    "\u00ad soft hyphen",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕞𝕒𝕥𝕙 𝒮𝒸𝓇𝒾𝓅𝓉",
    "\U0001d15e\U0001d15f",                     # musical symbols: NFC decomposes them
    "\u2f00\u2e80 radicals \u3007 ideographic zero",
]

CODE = [
    "def f(x):\n    return x * 2\n",
    "int main(void) {\n    printf(\"hello, world\\n\");\n    return 0;\n}\n",
    "for (int i = 0; i < n; i++) {\n\tsum += a[i] * b[i];\n}\n",
    "class Foo:\n    def __init__(self, bar):\n        self.bar = bar\n\n    def baz(self):\n        return self.bar ** 2\n",
    "{\"key\": \"value\", \"list\": [1, 2, 3], \"nested\": {\"a\": null, \"b\": true}}",
    "<html>\n  <body>\n    <p class=\"x\">Hi &amp; bye</p>\n  </body>\n</html>\n",
    "#!/bin/sh\nset -eu\nfor f in *.txt; do echo \"$f\"; done | sort -u > out.log 2>&1\n",
    "SELECT id, name FROM users WHERE age >= 18 AND name LIKE 'A%' ORDER BY id DESC;",
    "x = [i**2 for i in range(10) if i % 2 == 0]  # squares of evens",
    "if (a && b || !c) { x <<= 2; y >>= 1; z ^= ~w; }",
    "fn main() {\n    let v: Vec<u32> = (0..10).collect();\n    println!(\"{:?}\", v);\n}\n",
    "    indented with four\n        eight\n            twelve\n                sixteen\n",
    "\t\tdouble tab\n\t\t\ttriple tab\n",
    "a = b  # two spaces before comment\nc = d    # four\n",
    "matrix = [[1, 0, 0],\n          [0, 1, 0],\n          [0, 0, 1]]\n",
    "// C++ comment\n/* block\n * comment\n */\n",
    "$ ls -la /usr/local/bin | grep -E '^-rwx' | wc -l",
    "std::vector<std::pair<int, std::string>> v{{1, \"a\"}, {2, \"b\"}};",
    "λx.λy.x y -- lambda calculus; (\\x -> x + 1) <$> [1..10]",
    "@decorator\nasync def handler(request: Request) -> Response:\n    await asyncio.sleep(0.1)\n",
]

CONTRACTIONS = [
    "it's", "don't", "we're", "I've", "I'm", "you'll", "he'd",
    "IT'S", "DON'T", "WE'RE", "I'VE", "I'M", "YOU'LL", "HE'D",
    "'s 't 're 've 'm 'll 'd", "'S 'T 'RE 'VE 'M 'LL 'D", "'Re 'Ve 'Ll", "'s's's", "''s",
    "it\u2019s don\u2019t we\u2019re", "rock 'n' roll", "'quoted'", "'''triple'''", "O'Neil's dog's bone",
    "they'd've y'all'll", "'sam' 'tom' 'red' 'very' 'me' 'llama' 'dog'", "'", "' s", "'1 '2", "x'y",
]

SPECIAL = [
    "<|endoftext|>", "<|padding|>", "a<|endoftext|>b", " <|endoftext|> ", "<|endoftext|><|endoftext|>",
    "Hello<|endoftext|>World<|padding|>!", "<|endoftext|", "|endoftext|>", "<|EndOfText|>", "< |endoftext|>",
    "<|endoftext|>\u0301", "e<|endoftext|>\u0301", "<|padding|>   <|endoftext|>", "text\n<|endoftext|>\nmore",
    "<|endoftext|>  two spaces", "<<|endoftext|>>", "<|endoftext|>" * 5, "end.<|endoftext|>",
]


def whitespace_cases(rng):
    out = []
    for n in range(1, 31):
        out.append(" " * n)
        out.append("a" + " " * n + "b")
        out.append("x" + " " * n)
        out.append(" " * n + "y")
        out.append("\t" * n)
        out.append("\n" * n)
        out.append("word" + "\n" * n + "word")
        mix = "".join(rng.choice([" ", " ", "\t", "\n", "\r", "\r\n", "\u00a0", "\u3000"]) for _ in range(n))
        out.append("p" + mix + "q")
        out.append(mix)
    out += [
        "  hello", "hello  ", "  hello  ", " hello", "hello ", "\nhello", "hello\n", " \n \n ", "\n \n",
        "a \tb", "a\t b", "a \nb", "a\n b", "a  \n  b", "a\r\n\r\nb", "\r", "\r\r\r", "\x0b\x0c",
        "a\x0bb\x0cc", "a\u00a0b", "a\u00a0\u00a0b", "a \u00a0b", "a\u3000b", "a\u2028b\u2029c", "a\u0085b",
        "a\u1680b", "a\u2000b\u2001c\u2002d\u2003e\u2004f\u2005g\u2006h\u2007i\u2008j\u2009k\u200al",
        "a\u202fb\u205fc", "a\u180eb", "a\u200bb", "a\x1cb\x1dc\x1ed\x1fe", "   \u00a0   ", " \u3000 ",
        "a" + " " * 24 + "b", "a" + " " * 25 + "b", "a" + " " * 48 + "b", "a" + " " * 49 + "b",
        " " * 100, "a" + " " * 100 + "b", "\t \t \t", " \t", "\t ", "  \t  ", "\n\n\n\nparagraph",
    ]
    return out


def number_cases(rng):
    out = ["0", "7", "42", "123", "1234", "12345678901234567890", "3.14159", "1,000,000", "1e-10",
           "0x7fffffff", "-273.15", "+1 (555) 123-4567", "2024-06-07T12:34:56Z", "192.168.0.1",
           "\u0660\u0661\u0662\u0663\u0664", "\u0966\u0967\u0968", "\uff11\uff12\uff13", "\u00b2\u00b3\u00b9",
           "\u2160\u2161\u2162", "\u00bd\u00bc\u00be", "\u4e00\u4e8c\u4e09", "version 1.2.3-rc.4+build.5",
           "a1b2c3", "1a2b3c", "99 bottles", "007", "3" * 50]
    for _ in range(10):
        out.append("".join(rng.choice("0123456789") for _ in range(rng.randint(1, 40))))
    return out


def random_cases(rng):
    out = []
    printable = "".join(chr(c) for c in range(32, 127)) + "\t\n"
    for _ in range(60):
        out.append("".join(rng.choice(printable) for _ in range(rng.randint(1, 80))))
    # Random code points from many blocks (no surrogates: a Python str with them cannot be encoded).
    ranges = [(0x20, 0x7e), (0xa0, 0x24f), (0x300, 0x36f), (0x370, 0x3ff), (0x400, 0x4ff), (0x590, 0x5ff),
              (0x600, 0x6ff), (0x900, 0x97f), (0xe00, 0xe7f), (0x1100, 0x11ff), (0x1e00, 0x1eff),
              (0x2000, 0x206f), (0x2100, 0x22ff), (0x3000, 0x30ff), (0x4e00, 0x4fff), (0xac00, 0xad00),
              (0xfb00, 0xfb4f), (0xff00, 0xffef), (0x1f300, 0x1f6ff), (0x1d400, 0x1d4ff), (0x0, 0x1f)]
    for _ in range(60):
        s = []
        for _ in range(rng.randint(1, 40)):
            lo, hi = rng.choice(ranges)
            s.append(chr(rng.randint(lo, hi)))
        out.append("".join(s))
    # Word soup with random whitespace and punctuation between words.
    words = ("the of and to in is was for on that with as by at from it this be are or an not "
             "Hello World Python xLSTM RWKV token tokenizer café naïve 東京 Москва 42 3.14 don't it's "
             "<|endoftext|> <|padding|> 😀 👍🏽 e\u0301").split(" ")
    seps = [" ", " ", " ", "  ", "   ", "\n", "\t", ", ", ". ", "!", "?", " - ", "\n\n", "    ", "\r\n", ""]
    for _ in range(40):
        out.append("".join(rng.choice(words) + rng.choice(seps) for _ in range(rng.randint(1, 30))))
    return out


def long_cases():
    para = " ".join(PROSE[:5])
    return [para * 6, "a" * 1000, "ab" * 500, "\n" * 200, "\t" * 200, "!" * 300, "9" * 500,
            "word " * 300, ("日本語" * 200), ("😀" * 100), "e\u0301" * 200]


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: make_tokenizer_vectors.py TOKENIZER_JSON OUT_JSONL")
    import tokenizers
    tok = tokenizers.Tokenizer.from_file(sys.argv[1])
    with open(sys.argv[1], "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    rng = random.Random(SEED)
    texts = ([""] + PROSE + UNICODE + CODE + CONTRACTIONS + SPECIAL + whitespace_cases(rng) + number_cases(rng)
             + random_cases(rng) + long_cases())
    seen = set()
    rows = []
    for t in texts:
        if t in seen:
            continue
        seen.add(t)
        ids = tok.encode(t).ids
        dec = tok.decode(ids, skip_special_tokens=True)
        rows.append({"text": t, "hex": t.encode("utf-8").hex(), "ids": ids,
                     "decoded_hex": dec.encode("utf-8").hex()})
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        meta = {"tokenizers": tokenizers.__version__, "tokenizer_json_sha256": sha, "seed": SEED,
                "count": len(rows), "python": sys.version.split()[0]}
        f.write(json.dumps({"_meta": meta}, ensure_ascii=True) + "\n")
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=True) + "\n")
    print(f"wrote {len(rows)} vectors to {sys.argv[2]} (tokenizers {tokenizers.__version__})")


if __name__ == "__main__":
    main()
