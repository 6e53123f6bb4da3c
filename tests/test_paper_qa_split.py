"""The paper study's QA-shaped training: XQuAD training articles only, XQuAD-R on the held-out
articles, MLQA-R whole; the pre-Ray leakage guard accepts exactly that (real files, no Ray)."""

from __future__ import annotations


import pytest

from hybridir.config import ArticleHoldout, DataConfig
from hybridir.data.registry import load_eval_set
from hybridir.data.splits import LeakageError, check_no_leakage, keep_groups
from hybridir.data.xquad import held_out_articles, load_xquad, xquad_articles
from hybridir.train import training_articles
from study.checks import check_data, check_leakage, check_local_resources, check_models
from study.spec import EvalSetSettings, StudyConfigError, load_study

HOLDOUT = {"fraction": 0.25, "seed": 0}
MLQA_SHARED = ["Harvard_University", "Prime_number"]


def xquad_training(languages=("en", "de"), exclude=()):
    data = DataConfig(source="xquad", holdout_articles=ArticleHoldout(**HOLDOUT), exclude_articles=list(exclude))
    return training_articles(load_xquad(list(languages)), data)


def test_held_out_articles_are_the_choose_groups_rule_and_differ_by_seed():
    titles = xquad_articles()
    assert len(titles) == 48
    held = held_out_articles(**HOLDOUT)
    assert len(held) == 12 and held <= titles
    assert held != held_out_articles(0.25, 1)


def test_training_pairs_have_only_training_articles():
    full = load_xquad(["en", "de"])
    pairs = xquad_training(exclude=MLQA_SHARED)
    held = held_out_articles(**HOLDOUT)
    assert set(pairs.groups) == set(full.groups) - held - set(MLQA_SHARED)
    assert 0 < len(pairs) < len(full)
    assert set(pairs.queries) == {"en", "de"}


def test_held_out_xquad_r_has_only_held_out_articles_and_all_their_candidates():
    corpus = load_eval_set("xquad-r")
    held = held_out_articles(**HOLDOUT)
    part = EvalSetSettings(dataset="xquad-r", held_out_articles=HOLDOUT)
    assert part.article_groups() == held
    restricted = keep_groups(corpus, held)
    assert set(restricted.groups.values()) == held
    for language, pool in corpus.candidates.items():
        expected = {cid for cid in pool if corpus.candidate_groups.get(cid) in held}
        kept = set(restricted.candidates[language])
        assert expected and kept == expected, language  # every candidate of those articles, no other
    # Held-out XQuAD-R shares nothing with training-article XQuAD: the guard accepts it ...
    check_no_leakage(xquad_training(tuple(corpus.languages)), restricted)
    # ... and refuses full XQuAD-R (the training articles are in it).
    with pytest.raises(LeakageError, match="shared item ids"):
        check_no_leakage(xquad_training(), corpus)


def test_mlqa_r_shares_two_xquad_articles_that_the_exclusion_removes():
    mlqa = load_eval_set("mlqa-r")
    with pytest.raises(LeakageError, match="Harvard_University|Prime_number"):
        check_no_leakage(xquad_training(), mlqa)
    check_no_leakage(xquad_training(exclude=MLQA_SHARED), mlqa)  # no shared item id, no shared title


def test_held_out_articles_only_on_xquad_r():
    with pytest.raises(ValueError, match="held_out_articles applies to dataset 'xquad-r' only"):
        EvalSetSettings(dataset="mlqa-r", held_out_articles=HOLDOUT)


@pytest.mark.parametrize("profile", [None, "local"])
def test_paper_study_passes_the_pre_ray_checks(profile):
    spec = load_study("paper", profile=profile)
    check_data(spec)  # includes check_leakage over every cell (xquad and ntrex)
    if profile == "local":
        check_models(spec)
        check_local_resources(spec, cpus=2)
    assert spec.search.samples_per_cell + spec.search.seeds >= 4
    assert {spec.train_config(cell).data.source for cell in spec.cells()} == {"xquad", "ntrex"}
    claims = {claim.id: claim for claim in spec.claims}
    assert claims["qa-xquad-hybrid-vs-xy-multi"].direction == "equivalent"
    assert claims["ntrex-mlqa-hybrid-vs-xy-multi"].margin == 0.01


def _paper_with(edit) -> dict:
    import yaml

    from study.spec import STUDIES_DIR

    raw = yaml.safe_load((STUDIES_DIR / "paper.yaml").read_text())
    edit(raw)
    return raw


def test_guard_refuses_full_xquad_r_naming_dataset_field_and_overlap():
    def full(raw):
        raw["evaluation"]["final"][0] = {"dataset": "xquad-r"}

    with pytest.raises(StudyConfigError, match=r"data.source='xquad'.*evaluation.final\[0\] dataset 'xquad-r'.*shared item ids"):
        check_leakage(load_study(_paper_with(full)))


def test_guard_refuses_an_evaluation_holdout_that_overlaps_the_training_articles():
    def other_seed(raw):
        raw["evaluation"]["final"][0] = {"dataset": "xquad-r", "held_out_articles": {"fraction": 0.25, "seed": 1}}

    with pytest.raises(StudyConfigError, match=r"evaluation.final\[0\].*'seed': 1.*shared documents/articles"):
        check_leakage(load_study(_paper_with(other_seed)))


def test_guard_refuses_mlqa_r_without_the_shared_article_exclusion():
    def no_exclusion(raw):
        raw["base"]["data"].pop("exclude_articles")

    with pytest.raises(StudyConfigError, match=r"evaluation.final\[1\] dataset 'mlqa-r'.*Harvard_University"):
        check_leakage(load_study(_paper_with(no_exclusion)))
