"""The embedded sample corpus: a deterministic generator of realistic YEDDA documents.

It mimics the layout of taxonomic mycology papers: page headers, titles,
abstracts, nomenclature lines with binomials, authors and "sp. nov.",
descriptions with measurements in µm, discussion, figure captions and
bibliography, at roughly the real 1 : 4 : 20 line imbalance. No network, no
files from elsewhere: everything is drawn from small word lists below.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SAMPLE_DOCS = 60  # documents of the embedded sample corpus that commands read by default
SAMPLE_SOURCE = "sample corpus"  # how a study's ``source`` names it

GENERA = ["Galerina", "Russula", "Cortinarius", "Inocybe", "Marasmius", "Mycena", "Entoloma",
          "Lactarius", "Amanita", "Boletus", "Xylaria", "Hypoxylon", "Phellinus", "Ganoderma",
          "Trametes", "Clitocybe", "Psathyrella", "Coprinus", "Agaricus", "Lepiota", "Hygrocybe"]
EPITHETS = ["barkmanii", "pallida", "fusca", "minor", "alpina", "tropicalis", "velutina",
            "rubescens", "sphagnicola", "brunnea", "sinensis", "mexicana", "lutea", "gracilis",
            "americana", "nigra", "hirsuta", "aurantiaca", "europaea", "longispora", "parvula"]
AUTHORS = ["Arnolds", "Singer", "Vellinga", "Noordeloos", "Petersen", "Korf", "Bas", "Redhead",
           "Hennebert", "Oberwinkler", "Pegler", "Horak", "Kühner", "Fr.", "Pers.", "(Fr.) P. Kumm."]
ORGANS = ["Pileus", "Lamellae", "Stipe", "Context", "Basidiospores", "Basidia", "Cheilocystidia",
          "Pleurocystidia", "Pileipellis", "Hyphae", "Clamp connections", "Ascospores", "Asci"]
SHAPES = ["convex", "plano-convex", "conical", "campanulate", "cylindrical", "clavate", "ellipsoid",
          "fusiform", "subglobose", "lageniform", "adnate", "decurrent", "hygrophanous", "striate"]
COLOURS = ["brown", "ochraceous", "pale yellow", "reddish", "greyish", "white", "cream", "dark brown",
           "orange-brown", "hyaline", "pinkish"]
MISC_WORDS = ["the", "of", "and", "in", "collections", "species", "this", "was", "from", "with",
              "genus", "study", "described", "material", "specimens", "we", "found", "differs",
              "phylogenetic", "analysis", "based", "sequences", "region", "similar", "however",
              "known", "only", "type", "locality", "forest", "soil", "observed", "herbarium",
              "characters", "taxonomy", "previously", "recorded", "group", "section", "clade"]
JOURNALS = ["Mycotaxon", "Persoonia", "Mycologia", "Mycol. Res.", "Sydowia", "Fungal Diversity"]


def _words(rng, vocab, k):
    return " ".join(vocab[i] for i in rng.integers(0, len(vocab), size=k))


def _sentence(rng, lo=8, hi=16):
    s = _words(rng, MISC_WORDS, int(rng.integers(lo, hi)))
    return s[0].upper() + s[1:] + "."


def _binomial(rng):
    return f"{GENERA[rng.integers(len(GENERA))]} {EPITHETS[rng.integers(len(EPITHETS))]}"


def _author(rng):
    a = AUTHORS[rng.integers(len(AUTHORS))]
    if rng.random() < 0.4:
        a += f" & {AUTHORS[rng.integers(len(AUTHORS))]}"
    return a


def _measure(rng):
    a = round(float(rng.uniform(2, 12)), 1)
    b = round(a + float(rng.uniform(0.5, 5)), 1)
    unit = "µm" if rng.random() < 0.9 else "/#m"  # OCR writes µm as /#m: a '#' inside text
    return f"{a}-{b} × {round(a * 0.6, 1)}-{round(b * 0.7, 1)} {unit}"


def _block(lines, label):
    return "[@" + "\n".join(lines) + "#" + label + "*]"


def _paragraph(rng, n_lines):
    """Discussion text; some sentences cite names or sizes, as real discussions do."""
    out = []
    for _ in range(n_lines):
        s = _sentence(rng)
        r = rng.random()
        if r < 0.12:
            s = f"{_binomial(rng)} {_author(rng)} {s[0].lower()}{s[1:]}"
        elif r < 0.22:
            s = s[:-1] + f" ({_measure(rng)})."
        out.append(s)
    return out


def _description_line(rng):
    organ = ORGANS[rng.integers(len(ORGANS))]
    shape = SHAPES[rng.integers(len(SHAPES))]
    colour = COLOURS[rng.integers(len(COLOURS))]
    r = rng.random()
    if r < 0.5:
        return f"{organ} {_measure(rng)}, {shape}, {colour}, smooth, thin-walled."
    if r < 0.75:
        return f"{organ} {int(rng.integers(5, 80))}-{int(rng.integers(80, 150))} mm broad, {shape}, {colour} when moist."
    return f"{organ} {shape}, {colour}, {_words(rng, MISC_WORDS, int(rng.integers(3, 8)))}."


def _taxon(rng, year, keep_name: bool = True):
    """Nomenclature, then description, then discussion: the Nom → Desc pattern of real papers.

    Without ``keep_name`` the nomenclature block is left out (the taxon is treated in running text).
    """
    blocks = []
    name = _binomial(rng)
    nom = [f"{name} {_author(rng)}, sp. nov." if rng.random() < 0.5 else f"{name} ({_author(rng)}) {_author(rng)}, comb. nov."]
    if rng.random() < 0.5:
        nom.append(f"≡ {_binomial(rng)} {_author(rng)}, {JOURNALS[rng.integers(len(JOURNALS))]} {int(rng.integers(10, 120))}: {int(rng.integers(1, 400))}. {year - int(rng.integers(1, 80))}.")
    if keep_name:
        blocks.append(_block(nom, "Nomenclature"))
    if rng.random() < 0.5:
        blocks.append(_block([f"MycoBank MB{int(rng.integers(100000, 999999))}"], "MB"))
    if rng.random() < 0.3:
        # A diagnosis reads like a description but is labelled Misc, as in the real corpus.
        blocks.append(_block([_description_line(rng) for _ in range(int(rng.integers(2, 4)))], "Diagnosis"))
    blocks.append(_block([_description_line(rng) for _ in range(int(rng.integers(4, 11)))], "Description"))
    blocks.append(_block([f"Holotype: {_words(rng, MISC_WORDS, 3)}, {int(rng.integers(1, 28))} Sept. {year - 2}, {_author(rng)} {int(rng.integers(100, 9999))} (L)."], "Type-collection"))
    for _ in range(int(rng.integers(2, 5))):
        blocks.append(_block(_paragraph(rng, int(rng.integers(3, 9))), "Misc-exposition"))
    if rng.random() < 0.5:
        blocks.append(_block([f"Fig. {int(rng.integers(1, 20))}. {name}: a. basidiomata; b. spores; c. cheilocystidia. Bar = 10 µm."], "Figure"))
    return blocks


def generate_document(seed: int, index: int, rare_nomenclature: int = 1) -> str:
    """One YEDDA document; the same ``(seed, index)`` always gives the same text.

    ``rare_nomenclature`` k > 1 keeps each taxon's nomenclature block with probability 1/k, making
    Nomenclature about k times rarer; k = 1 gives exactly the default corpus.
    """
    rng = np.random.default_rng([seed, index])
    keep = np.random.default_rng([seed, index, 1]) if rare_nomenclature > 1 else None  # own stream: k=1 unchanged
    year = int(rng.integers(1990, 2012))
    journal = JOURNALS[rng.integers(len(JOURNALS))]
    blocks = [
        _block([f"{journal.upper()}", f"Volume {int(rng.integers(10, 120))}, pp. {int(rng.integers(1, 400))}-{int(rng.integers(400, 800))}"], "Page-header"),
        _block([f"New species of {GENERA[rng.integers(len(GENERA))]} from {_words(rng, ['Mexico', 'Italy', 'China', 'the Netherlands', 'Brazil'], 1)}"], "Title"),
        _block([f"{_author(rng)}"], "Author"),
        _block(["Abstract — " + _sentence(rng)] + _paragraph(rng, int(rng.integers(3, 7))), "Abstract"),
        _block(["Introduction"], "Section-header"),
    ]
    for _ in range(int(rng.integers(2, 5))):
        blocks.append(_block(_paragraph(rng, int(rng.integers(4, 12))), "Misc-exposition"))
    for _ in range(int(rng.integers(1, 4))):
        blocks.extend(_taxon(rng, year, keep is None or keep.random() < 1.0 / rare_nomenclature))
        if rng.random() < 0.5:
            blocks.append(_block([f"{journal} ... {_author(rng)}"], "Page-header"))
    refs = [f"{_author(rng)} {year - int(rng.integers(1, 60))}. {_binomial(rng)} sp. nov. {journal} {int(rng.integers(1, 120))}: {int(rng.integers(1, 600))}."
            if rng.random() < 0.15 else f"{_author(rng)} {year - int(rng.integers(1, 60))}. {_sentence(rng, 5, 9)} {journal} {int(rng.integers(1, 120))}: {int(rng.integers(1, 600))}-{int(rng.integers(600, 900))}." for _ in range(int(rng.integers(6, 16)))]
    blocks.append(_block(["Literature cited"], "Section-header"))
    blocks.append(_block(refs, "Bibliography"))
    return "\n\n".join(blocks) + "\n"


def generate_corpus(n_docs: int = 60, seed: int = 0, rare_nomenclature: int = 1) -> dict[str, str]:
    """The sample corpus as ``{doc_id: YEDDA text}``: ``n_docs`` documents from ``seed``."""
    return {f"sample/doc{i:04d}.txt.ann": generate_document(seed, i, rare_nomenclature) for i in range(n_docs)}


def write_corpus(out_dir: str | Path, n_docs: int = 60, seed: int = 0) -> list[Path]:
    """Write the sample corpus into ``out_dir`` as ``.ann`` files and return their paths."""
    out = Path(out_dir)
    paths = []
    for doc_id, text in generate_corpus(n_docs, seed).items():
        path = out / Path(doc_id).name  # the folder asked for, not a sample/ folder inside it
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths
