"""How well-resourced a language is: the resource classes of Joshi et al. (2020).

Source: Pratik Joshi, Sebastin Santy, Amar Budhiraja, Kalika Bali, Monojit Choudhury, "The State
and Fate of Linguistic Diversity and Inclusion in the NLP World", ACL 2020, section 3 and its
language list https://microsoft.github.io/linguisticdiversity/assets/lang2tax.txt (language
name, class). Classes, from the amount of labelled and unlabelled data a language has:

  0 "The Left-Behinds", 1 "The Scraping-Bys", 2 "The Hopefuls", 3 "The Rising Stars",
  4 "The Underdogs", 5 "The Winners".

The criterion this project uses for "low-resource" is classes 0-2 (:data:`LOW_RESOURCE_MAX_CLASS`).
The table below holds the languages of the project's evaluation sets and training sources
(XQuAD-R, MLQA-R, AfriQA, the African and a few other FLORES / Tatoeba languages), keyed by the
canonical code of :func:`hybridir.languages.canonical`, with the name lang2tax.txt lists it
under. A language the taxonomy does not list (e.g. Bemba) has no class here: :func:`resource_class`
returns None and it meets no criterion.
"""

from __future__ import annotations

from collections.abc import Iterable

from hybridir.languages import canonical

SOURCE = ("Joshi et al. 2020, 'The State and Fate of Linguistic Diversity and Inclusion in the NLP World' "
          "(ACL 2020), resource classes 0-5 (lang2tax.txt)")
CLASS_NAMES = {0: "The Left-Behinds", 1: "The Scraping-Bys", 2: "The Hopefuls", 3: "The Rising Stars",
               4: "The Underdogs", 5: "The Winners"}
LOW_RESOURCE_MAX_CLASS = 2

# canonical code -> (class, the name in lang2tax.txt)
JOSHI_2020_CLASSES: dict[str, tuple[int, str]] = {
    # 5: The Winners
    "ar": (5, "arabic"), "de": (5, "german"), "en": (5, "english"), "es": (5, "spanish"), "fr": (5, "french"),
    "ja": (5, "japanese"), "zh": (5, "mandarin"),
    # 4: The Underdogs
    "ca": (4, "catalan"), "cs": (4, "czech"), "eu": (4, "basque"), "fa": (4, "persian"), "fi": (4, "finnish"),
    "hi": (4, "hindi"), "hr": (4, "croatian"), "hu": (4, "hungarian"), "it": (4, "italian"), "ko": (4, "korean"),
    "nl": (4, "dutch"), "pl": (4, "polish"), "pt": (4, "portuguese"), "ru": (4, "russian"), "sr": (4, "serbian"),
    "sv": (4, "swedish"), "tr": (4, "turkish"), "vi": (4, "vietnamese"),
    # 3: The Rising Stars
    "af": (3, "afrikaans"), "bg": (3, "bulgarian"), "bn": (3, "bengali"), "da": (3, "danish"), "el": (3, "greek"),
    "et": (3, "estonian"), "he": (3, "hebrew"), "id": (3, "indonesian"), "ka": (3, "georgian"), "kk": (3, "kazakh"),
    "lt": (3, "lithuanian"), "lv": (3, "latvian"), "ro": (3, "romanian"), "sk": (3, "slovak"), "sl": (3, "slovenian"),
    "ta": (3, "tamil"), "th": (3, "thai"), "fil": (3, "tagalog"), "uk": (3, "ukrainian"), "ur": (3, "urdu"),
    # 2: The Hopefuls
    "am": (2, "amharic"), "ga": (2, "irish"), "ha": (2, "hausa"), "is": (2, "icelandic"), "lo": (2, "lao"),
    "mr": (2, "marathi"), "mt": (2, "maltese"), "sw": (2, "swahili"), "ti": (2, "tigrinya"), "tn": (2, "tswana"),
    "wo": (2, "wolof"), "xh": (2, "xhosa"), "yo": (2, "yoruba"), "zu": (2, "zulu"),
    # 1: The Scraping-Bys
    "ak": (1, "akan"), "bm": (1, "bambara"), "ee": (1, "ewe"), "ig": (1, "igbo"), "ki": (1, "kikuyu"),
    "lg": (1, "luganda"), "ln": (1, "lingala"), "mg": (1, "malagasy"), "ny": (1, "chichewa"), "om": (1, "oromo"),
    "rn": (1, "kirundi"), "rw": (1, "kinyarwanda"), "sn": (1, "shona"), "so": (1, "somali"), "st": (1, "sesotho"),
    "tw": (1, "twi"),
    # 0: The Left-Behinds
    "fon": (0, "fongbe"),
}


def resource_class(code: str) -> int | None:
    """The Joshi et al. (2020) class of a language in any code scheme (None: not in the table)."""
    entry = JOSHI_2020_CLASSES.get(canonical(code))
    return None if entry is None else entry[0]


def is_low_resource(code: str, max_class: int = LOW_RESOURCE_MAX_CLASS) -> bool:
    """Whether the language's class is at most ``max_class`` (a language without a class: False)."""
    level = resource_class(code)
    return level is not None and level <= max_class


def criterion_text(max_class: int = LOW_RESOURCE_MAX_CLASS) -> str:
    """The criterion in words, with its source."""
    names = ", ".join(f"{k} {CLASS_NAMES[k]}" for k in range(max_class + 1))
    return f"low-resource = class 0-{max_class} ({names}) of {SOURCE}"


def classify(codes: Iterable[str], max_class: int = LOW_RESOURCE_MAX_CLASS) -> list[dict]:
    """One row per language: code, lang2tax name, class, whether it meets the criterion."""
    rows = []
    for code in codes:
        tag = canonical(code)
        level, name = JOSHI_2020_CLASSES.get(tag, (None, ""))
        rows.append({"language": tag, "joshi_name": name, "joshi_class": level,
                     "low_resource": level is not None and level <= max_class})
    return rows
