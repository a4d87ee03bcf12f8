"""The standard VQA accuracy (VQA v1/v2, OK-VQA), as the official evaluation script computes it.

For one question with (normally 10) human answers:

1. the prediction is normalised: newlines/tabs to spaces, stripped, :func:`process_punctuation`,
   then :func:`process_digit_article` (lower-case, number words ``zero``..``ten`` and ``none`` to
   digits, articles ``a an the`` dropped, missing apostrophes restored: ``dont`` -> ``don't``);
2. the human answers get :func:`process_punctuation` only, and only when they are not all identical
   (they are stored already normalised, which is why the official script does no more);
3. for each human answer *i*, acc_i = min(1, #(other nine answers equal to the prediction) / 3);
   the question's accuracy is the mean of the ten acc_i.

So 1 of 10 humans agreeing gives 0.3, 2 give 0.6, 3 give 0.9 and 4 or more give 1.0.  The dataset
score is the mean over questions (the official script reports it x 100).  Imports no model code.
Reference: Antol et al., "VQA: Visual Question Answering", ICCV 2015, and the VQA API's
``vqaEval.py`` (GT-Vision-Lab/VQA).
"""
from __future__ import annotations

import re
from collections import defaultdict
from typing import Hashable, Sequence

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


def normalize_prediction(text: str) -> str:
    """A model's answer in the form the official script compares."""
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(text))


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """Accuracy in [0, 1] of ``prediction`` against the human ``answers`` of one question."""
    answers = list(answers)
    if not answers:
        raise ValueError("VQA accuracy needs the human answers of the question; got none")
    pred = normalize_prediction(prediction)
    if len(set(answers)) > 1:
        answers = [process_punctuation(a) for a in answers]
    matches = [a == pred for a in answers]
    total = sum(matches)
    # leave-one-out: answer i removed, count the matches among the others
    return sum(min(1.0, (total - m) / 3.0) for m in matches) / len(answers)


def mean_vqa_accuracy(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> float:
    """Mean accuracy in [0, 1] over questions (the official 'overall' is this x 100)."""
    return vqa_report(predictions, answers)["overall"]


def vqa_report(predictions: Sequence[str], answers: Sequence[Sequence[str]],
               groups: Sequence[Hashable] | None = None) -> dict:
    """``{"overall": mean, "per_item": [...], "by_group": {group: mean}}`` (all in [0, 1]); ``groups``
    is e.g. each question's ``answer_type`` ("yes/no", "number", "other")."""
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions but {len(answers)} answer lists; give one per question")
    if not predictions:
        raise ValueError("no predictions to score")
    per_item = [vqa_accuracy(p, a) for p, a in zip(predictions, answers)]
    by_group: dict = defaultdict(list)
    if groups is not None:
        if len(groups) != len(per_item):
            raise ValueError(f"{len(groups)} groups for {len(per_item)} questions")
        for g, acc in zip(groups, per_item):
            by_group[g].append(acc)
    return {"overall": sum(per_item) / len(per_item), "per_item": per_item,
            "by_group": {g: sum(v) / len(v) for g, v in by_group.items()}}
