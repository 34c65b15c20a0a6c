"""
The paper's rules: what the SkyThought harness of the TLDR release decides (zzli2022/TLDR,
skythought/skythought_evals: util/math_parsing_util.py and the math, aime, amc23 and gsm8k task handlers),
re-expressed step by step. Its quirks are kept on purpose, because they are what the paper's numbers mean:
the last "boxed" anywhere (the thinking included), else the text after "the answer is", else the last
number of the whole response, even of one cut off mid-reasoning; "1,000" normalises to "0,1"; 0.25 and
2500 count for 25 (percent forms). One difference: where SkyThought also tries sympy.parse_expr, which
evaluates the model's text as Python, only the LaTeX parser (latex2sympy) reads it here.

What grade.py --rules skythought runs, beside its strict rules (grade.py); tests/test_grader.py checks it
against SkyThought's own verdicts on real R1 outputs.
"""

import math
import re


_NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen".split())}
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_NUMBER_WORDS.update({w: 10 * i for i, w in enumerate(_TENS, 2)})
_SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9}


def _words_to_number(text):
    """The number that the number words of text spell ("Twenty-five" -> "25", "025" -> "25"), or text
    unchanged when it has none (the word2number package SkyThought uses, for plain cases)."""
    t = text.replace("-", " ").lower()
    if t.isdigit():
        return str(int(t))
    words = [w for w in t.split() if w in _NUMBER_WORDS or w in _SCALES]
    if not words or any(words.count(s) > 1 for s in ("thousand", "million", "billion")):
        return text
    total = current = 0
    for w in words:
        if w == "hundred":
            current = (current or 1) * 100
        elif w in _SCALES:
            total, current = total + (current or 1) * _SCALES[w], 0
        else:
            current += _NUMBER_WORDS[w]
    return str(total + current)


def _fix_fracs(s):
    """\\frac12 -> \\frac{1}{2}, \\frac1{2} -> \\frac{1}{2}; a \\frac without two characters after it: no change."""
    pieces = s.split("\\frac")
    out = pieces[0]
    for piece in pieces[1:]:
        out += "\\frac"
        if piece.startswith("{"):
            out += piece
        elif len(piece) < 2:
            return s
        elif piece[1] != "{":
            out += "{" + piece[0] + "}{" + piece[1] + "}" + piece[2:]
        else:
            out += "{" + piece[0] + "}" + piece[1:]
    return out


def _fix_slash(s):
    """"3/4" -> "\\frac{3}{4}" for two plain integers."""
    if s.count("/") != 1:
        return s
    a, b = s.split("/")
    try:
        a = a if "sqrt" in a else int(a)
        b = b if "sqrt" in b else int(b)
    except ValueError:
        return s
    return f"\\frac{{{a}}}{{{b}}}" if s == f"{a}/{b}" else s


def skythought_normalize(s):
    """SkyThought's answer normalisation, in its order."""
    s = str(s).strip().replace("\n", "").rstrip(".").replace("\\!", "")
    s = re.sub(r"\\begin\{array\}\{.*?\}", r"\\begin{pmatrix}", s)
    s = s.replace("\\end{array}", "\\end{pmatrix}").replace("bmatrix", "pmatrix")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\neq", "\\ne").replace("\\leq", "\\le").replace("\\geq", "\\ge")
    s = s.replace("\\left", "").replace("\\right", "").replace("\\{", "{").replace("\\}", "}")
    s = re.sub(r"\\text\{([a-zA-Z]+)\}", lambda m: _words_to_number(m.group(1).lower())
               if _words_to_number(m.group(1).lower()) != m.group(1).lower() else m.group(0), s)
    s = re.sub(r"(cm|inches)\}\^2", r"\1}", s)
    without_unit = re.sub(r"\\text\{.*?\}$", "", s).strip()  # a trailing \text{...}: a unit
    if without_unit and without_unit != s:
        s = without_unit
    for junk in ("^{\\circ}", "^\\circ", "\\$", "$", "\\(", "\\)"):
        s = s.replace(junk, "")
    s = _words_to_number(s)
    s = re.sub(r"\\text\{(.*?)\}", r"\1", s)
    for prefix in ("x=", "y=", "z=", "x\\in", "y\\in", "z\\in", "x\\to", "y\\to", "z\\to"):
        s = s.replace(prefix, "")
    s = s.replace("\\emptyset", "{}").replace("(-\\infty,\\infty)", "\\mathbb{R}")
    s = s.replace("\\%", "").replace("%", "").replace(" .", " 0.").replace("{.", "{0.")
    s = s.replace("infinity", "\\infty")
    if "\\infty" not in s:
        s = s.replace("inf", "\\infty")
    s = re.sub(r"\\mbox\{.*?\}", "", s.replace("and", "").replace("\\mathbf", ""))
    if "j" in s and "i" not in s:
        s = s.replace("j", "i")
    s = re.sub(r"(\d+)\.0*$", r"\1", re.sub(r"(\d+)\.0*([^\d])", r"\1\2", s))
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    if len(s.split("=")) == 2 and len(s.split("=")[0]) <= 2:
        s = s.split("=")[1]
    s = re.sub(r"\\sqrt(\w+)", r"\\sqrt{\1}", s).replace(" ", "")
    s = _fix_slash(_fix_fracs(s))
    s = re.sub(r"\\(?=-?\d+(\\|\)|,|\]|$))", "", s).removesuffix("thgrade")
    if re.fullmatch(r"(\s*-?\d+\s*,)*\s*-?\d+\s*", s):  # integer lists are compared as sorted sets
        s = ",".join(str(x) for x in sorted(int(x) for x in s.split(",")))
    return s


def skythought_extract(response):
    """The answer SkyThought reads from a response, normalised: the last "boxed", else what follows the last
    "the answer is" / "final answer is", else the last number of the whole text ("" when there is none)."""
    if not isinstance(response, str):
        return ""
    text = response.strip().replace("ки", "")
    if "final answer is $" in text and "$. I hope" in text:
        pred = text.split("final answer is $", 1)[1].split("$. I hope", 1)[0].strip()
    elif "boxed" in text:
        rest = text.rsplit("boxed", 1)[1]
        if not rest:
            return ""
        if rest[0] == "{":  # up to the matching brace, or to the end if there is none
            depth, pred = 1, ""
            for c in rest[1:]:
                depth += (c == "{") - (c == "}")
                if depth == 0:
                    break
                pred += c
        else:
            pred = rest.split("$")[0].strip()
    elif "he answer is" in text:
        pred = text.split("he answer is")[-1].strip()
    elif "final answer is" in text:
        pred = text.split("final answer is")[-1].strip()
    elif "答案是" in text:
        pred = text.split("答案是")[1].strip().split("\n\n")[0].strip()
    else:
        numbers = re.findall(r"-?\d*\.?\d+", text.replace(",", ""))
        pred = numbers[-1] if numbers else ""
    pred = re.sub(r"\n\s*", "", pred).removeprefix(":").removesuffix(".").removesuffix("/")
    return skythought_normalize(pred)


def skythought_gsm8k_match(pred, gold):
    """SkyThought's GSM8K check: the last number-like run of the (normalised) extracted answer, as a string,
    equals the reference number."""
    runs = [m.group(0) for m in re.finditer(r"(-?[$0-9.,]{2,})|(-?[0-9]+)", pred.replace(",", "").replace("$", ""))]
    return bool(runs) and runs[-1].strip() == str(gold).strip().replace(",", "")


def _as_float(s):
    s = s.replace(",", "")
    if s.endswith("%"):
        return float(s.removesuffix("%").removesuffix("\\")) / 100
    return float(s)


def _sympy(text):
    from latex2sympy2_extended import latex2sympy
    for candidate in (text.replace("\\\\", "\\"), text):
        try:
            return latex2sympy(candidate)
        except Exception:
            pass
    return text


def _symbolic_equal(a, b):
    from sympy import N, simplify
    a, b = _sympy(a), _sympy(b)
    checks = (lambda: str(a) == str(b) or a == b,
              lambda: a.equals(b) or simplify(a - b) == 0,
              lambda: (abs(a.lhs - a.rhs)).equals(abs(b.lhs - b.rhs)),
              lambda: math.isclose(float(N(a)), float(N(b)), rel_tol=1e-4),
              lambda: a.shape == b.shape and a.applyfunc(lambda x: round(x, 3)).equals(
                  b.applyfunc(lambda x: round(x, 3))))
    for check in checks:
        try:
            if check():
                return True
        except Exception:
            pass
    return False


def _unwrap(s):
    return s[1:-1] if len(s) > 1 else s


def skythought_equal(pred, gold):
    """SkyThought's math_equal: strings, choices, numbers (with percent forms), brackets, tuples, matrices,
    equations, then sympy. Both sides normalised already."""
    if pred.strip().lower() == gold.strip().lower():
        return True
    if gold in ("A", "B", "C", "D", "E"):
        choice = pred.strip("\n").rstrip(".").rstrip("/").strip().lstrip(":")
        letters = re.findall(r"\b(A|B|C|D|E)\b", choice.upper())
        if (letters[-1] if letters else choice.strip().strip(".")) == gold:
            return True
    try:
        p, g = _as_float(pred), _as_float(gold)
    except ValueError:
        pass
    else:
        return any(math.isclose(p, x, rel_tol=1e-4) for x in (g / 100, g, g * 100))
    if not pred:
        return False
    if "pmatrix" in pred and "pmatrix" not in gold:
        gold = ", ".join("\\begin{pmatrix}" + m.strip("{}").replace(",", "\\") + "\\end{pmatrix}"
                         for m in re.findall(r"\{.*,.*\}", gold))
    p, g = pred, gold
    if (p.startswith("[") and p.endswith("]") and not g.startswith("(")) or \
            (p.startswith("(") and p.endswith(")") and not g.startswith("[")):
        p, g = p.strip("[]()"), g.strip("[]()")
    if re.sub(r"[{}()]", "", p).lower() == re.sub(r"[{}()]", "", g).lower():
        return True
    if re.match(r"(\(|\[).+(\)|\])", pred) and re.match(r"(\(|\[).+(\)|\])", gold):
        ps, gs = _unwrap(pred).split(","), _unwrap(gold).split(",")
        if len(ps) == len(gs) and all(skythought_equal(a, b) for a, b in zip(ps, gs)):
            return True
    matrix = r"\\begin\{([pb])matrix\}(.*)\\end\{\1matrix\}"
    mp, mg = re.fullmatch(matrix, pred, re.S), re.fullmatch(matrix, gold, re.S)
    if mp and mg:
        rows_p = [r.split("&") for r in mp.group(2).split("\\\\") if r.strip()]
        rows_g = [r.split("&") for r in mg.group(2).split("\\\\") if r.strip()]
        if [len(r) for r in rows_p] == [len(r) for r in rows_g] and all(
                skythought_equal(a, b) for rp, rg in zip(rows_p, rows_g) for a, b in zip(rp, rg)):
            return True
    if pred.count("=") == 1 and gold.count("=") == 1:
        p, g = ("{} - ({})".format(*x.split("=")) for x in (pred, gold))
        if _symbolic_equal(p, g) or _symbolic_equal(f"-({p})", g):
            return True
    elif pred.count("=") == 1 and len(pred.split("=")[0].strip()) <= 2:
        if skythought_equal(pred.split("=")[1], gold):
            return True
    elif gold.count("=") == 1 and len(gold.split("=")[0].strip()) <= 2:
        if skythought_equal(pred, gold.split("=")[1]):
            return True
    return _symbolic_equal(pred, gold)


def skythought_match(pred, gold, gsm8k=False):
    """The paper's verdict for an extracted (normalised) answer against the reference answer. (SkyThought
    normalises a math answer a second time before comparing, and that changes some: "-7\\16" -> "-716".)"""
    if gsm8k:
        return skythought_gsm8k_match(pred, gold)
    return skythought_equal(skythought_normalize(pred), skythought_normalize(gold))
