"""The one answer normaliser of the code base: the rules of the official VQA evaluation script
(``vqaEval.py`` of GT-Vision-Lab/VQA, identical in its 2017 version and at HEAD), re-implemented.

:func:`process_punctuation`: each mark of ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !`` is deleted when
it touches a space anywhere in the text (or the text has a digit-comma-digit such as ``1,000``) and
replaced by a space otherwise; then at most 32 periods not followed by a digit are deleted.
:func:`process_digit_article`: lower-case, ``none zero .. ten`` to digits, ``a an the`` dropped, the
official table of contractions written without apostrophe restored (``dont`` -> ``don't``,
``oclock`` -> ``o'clock``; not ``its``, ``im``, ``ive`` or ``lets``, which the table lacks or spells
with a capital that can never match).  :func:`normalize_answer` = both, after newline/tab to space
and strip: what the VQA accuracy (:mod:`mmict_core.evaluate.metrics.vqa_accuracy`) and exact match
(:mod:`mmict_core.evaluate.exact_match`) compare.  Imports no model code.
"""
from __future__ import annotations

import re

_PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
            "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = frozenset({"a", "an", "the"})
# The official pattern, kept as written: "(?!<=" is a typo for a look-behind, so it only says "a
# period not followed by a digit"; and the script passes re.UNICODE (= 32) as the count argument.
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")
_PERIOD_COUNT = 32
_DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")

# Words written without their apostrophe -> the contracted form.  The official table's entries with
# capitals ("Im", "Ive", "Id've") can never match lower-cased text and are left out; its quirks
# ("somebody'd" -> "somebodyd") are kept.
_CONTRACTIONS = dict(pair.split("=") for pair in """
aint=ain't arent=aren't cant=can't couldve=could've couldnt=couldn't couldn'tve=couldn't've
couldnt've=couldn't've didnt=didn't doesnt=doesn't dont=don't hadnt=hadn't hadnt've=hadn't've
hadn'tve=hadn't've hasnt=hasn't havent=haven't hed=he'd hed've=he'd've he'dve=he'd've hes=he's howd=how'd
howll=how'll hows=how's isnt=isn't itd=it'd itd've=it'd've it'dve=it'd've itll=it'll maam=ma'am
mightnt=mightn't mightnt've=mightn't've mightn'tve=mightn't've mightve=might've mustnt=mustn't mustve=must've
neednt=needn't notve=not've oclock=o'clock oughtnt=oughtn't ow's'at='ow's'at 'ows'at='ow's'at
'ow'sat='ow's'at shant=shan't shed've=she'd've she'dve=she'd've shouldve=should've shouldnt=shouldn't
shouldnt've=shouldn't've shouldn'tve=shouldn't've somebody'd=somebodyd somebodyd've=somebody'd've
somebody'dve=somebody'd've somebodyll=somebody'll somebodys=somebody's someoned=someone'd
someoned've=someone'd've someone'dve=someone'd've someonell=someone'll someones=someone's
somethingd=something'd somethingd've=something'd've something'dve=something'd've somethingll=something'll
thats=that's thered=there'd thered've=there'd've there'dve=there'd've therere=there're theres=there's
theyd=they'd theyd've=they'd've they'dve=they'd've theyll=they'll theyre=they're theyve=they've
twas='twas wasnt=wasn't wed've=we'd've we'dve=we'd've weve=we've werent=weren't whatll=what'll
whatre=what're whats=what's whatve=what've whens=when's whered=where'd wheres=where's whereve=where've
whod=who'd whod've=who'd've who'dve=who'd've wholl=who'll whos=who's whove=who've whyll=why'll
whyre=why're whys=why's wont=won't wouldve=would've wouldnt=wouldn't wouldnt've=wouldn't've
wouldn'tve=wouldn't've yall=y'all yall'll=y'all'll y'allll=y'all'll yall'd've=y'all'd've
y'alld've=y'all'd've y'all'dve=y'all'd've youd=you'd youd've=you'd've you'dve=you'd've youll=you'll
youre=you're youve=you've
""".split())


def process_punctuation(text: str) -> str:
    """Drop each punctuation mark when it touches a space (or the text has a digit-comma-digit),
    else replace it by a space; then drop periods that are not followed by a digit."""
    drop_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for p in _PUNCT:
        touches_space = (p + " ") in text or (" " + p) in text
        out = out.replace(p, "" if touches_space or drop_all else " ")
    return _PERIOD.sub("", out, count=_PERIOD_COUNT)


def process_digit_article(text: str) -> str:
    """Lower-case; number words to digits; articles dropped; contractions restored."""
    words = [_NUMBERS.get(w, w) for w in text.lower().split()]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


def normalize_answer(text: str) -> str:
    """An answer in the form the official script compares a prediction in (2017; HEAD when the
    human answers differ): newlines/tabs to spaces, stripped, punctuation, then digits/articles/contractions."""
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(text))
