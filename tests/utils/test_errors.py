"""The shared tails of error messages: every "unknown name" error names the close match and the choices."""

from esrkit.utils.errors import choices, did_you_mean, quote


def test_choices_names_the_close_match_then_every_known_name_sorted():
    assert choices("sasrc", ["sasrec", "bert4rec"]) == " (did you mean 'sasrec'?); known: bert4rec, sasrec"
    assert choices("zzz", ["sasrec", "bert4rec"]) == "; known: bert4rec, sasrec"
    assert choices("zzz", []) == "; known: (none)"


def test_did_you_mean_pairs_each_misspelt_name_with_its_match():
    hint = did_you_mean(["hiden", "lrr"], ["hidden", "lr"])
    assert hint == " (did you mean 'hiden' -> 'hidden', 'lrr' -> 'lr'?)"
    assert did_you_mean(["x"], ["hidden"]) == ""


def test_quote_cuts_a_long_token_and_says_how_long_it_was():
    text = quote("a" * 500, limit=20)
    assert len(text) < 40 and text.endswith("(500 characters)")
    assert quote("short") == "'short'"
