"""LETI-EAE: ontology, Code4Struct rendering, readers, LeTI's verifier feedback, Arg-I/C metrics."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import gymnasium as gym
import pytest

import leti_env  # noqa: F401
from leti_env.eae import (SAMPLE_PATH, Argument, EventMention, ace05, eae_postprocess, load_eae, parse_arguments,
                          read_events, score, write_oneie)
from leti_env.eae.ontology import docstring

SHARED_EAE = Path(os.environ["LETI_DATA_DIR"]) / "eae"
needs_shared = pytest.mark.skipif(not SHARED_EAE.is_dir(), reason="no ../shared/data/eae")


# -- ontology --------------------------------------------------------------------------------------


@needs_shared
def test_ontology_facts_match_the_public_files():
    ours = ace05()
    source = json.loads((SHARED_EAE / "ace05_ontology" / "event_role_ACE.json").read_text())
    role_entity = json.loads((SHARED_EAE / "ace05_ontology" / "role_entity.json").read_text())
    assert set(ours.event_types) == set(source) and len(ours.event_types) == 33
    assert len({e.parent for e in ours.event_types.values()}) == 8
    for name, spec in source.items():
        assert list(ours.event(name).roles) == spec["roles"], name
        assert sorted(re.findall(r"<arg\d>", ours.event(name).template)) == sorted(re.findall(r"<arg\d>", spec["template"]))
        assert ours.event(name).template != spec["template"], f"{name}: templates are ours, not copied"
    assert {r: set(t) for r, t in ours.role_entity_types.items()} == {r: set(t) for r, t in role_entity.items()}
    used = {t for types in ours.role_entity_types.values() for t in types}
    assert used == set(ours.entity_types) == {"FAC", "GPE", "LOC", "ORG", "PER", "VEH", "WEA"}


def test_every_event_type_renders_to_code_that_runs():
    ontology = ace05()
    for name in ontology.event_types:
        namespace: dict = {}
        exec(compile(ontology.render_context(name), name, "exec"), namespace)
        event = ontology.event(name)
        instance = namespace[event.class_name]()
        assert all(getattr(instance, a) == [] for a in event.attributes)


# Type hints per class, as the ACE05 ontology and role-entity files give them (facts of the rendering).
HINTS = {
    "Movement": "agent: List[GPE | ORG | PER], artifact: List[FAC | ORG | PER | VEH | WEA], destination: List[FAC | GPE | LOC], "
                "origin: List[FAC | GPE | LOC], vehicle: List[VEH]",
    "Attack": "attacker: List[GPE | ORG | PER], instrument: List[VEH | WEA], place: List[FAC | GPE | LOC], "
              "target: List[FAC | LOC | ORG | PER | VEH | WEA], victim: List[PER]",
    "Merge_Org": "org: List[ORG | PER]",
    "Justice": "adjudicator: List[GPE | ORG | PER], agent: List[GPE | ORG | PER], defendant: List[GPE | ORG | PER], "
               "destination: List[FAC | GPE | LOC], entity: List[GPE | ORG | PER], origin: List[FAC | GPE | LOC], "
               "person: List[PER], place: List[FAC | GPE | LOC], plaintiff: List[GPE | ORG | PER], prosecutor: List[GPE | ORG | PER]",
}


@pytest.mark.parametrize("cls", sorted(HINTS))
def test_layout_matches_code4struct(cls):
    ontology = ace05()
    code = "\n".join(ontology.render_context(n) for n in ontology.event_types)
    block = code[code.index(f"class {cls}("):]
    block = block[: block.index("    ):")]
    hints = ", ".join(line.strip().rstrip(",").removesuffix(" = []") for line in block.splitlines()
                      if line.strip().endswith("= [],"))
    assert hints == HINTS[cls]


def test_child_class_and_prompt_layout():
    ontology = ace05()
    meet = ontology.event("Contact:Meet")
    assert docstring(meet) == "self.entity[0] got together with self.entity[1] at self.place place."
    child = ontology.render_child(ontology.event("Personnel:Start-Position"))
    assert child.startswith('class Start_Position(Personnel):\n    """self.person took up a position at self.entity organization')
    assert "        super().__init__(\n            entity=entity,\n            person=person,\n            place=place,\n        )\n" in child
    task = load_eae()[0]
    assert task.prompt.endswith(
        '"""\nTranslate the following sentence into an instance of Transport. The trigger word(s) of the event is marked '
        'with **trigger word**.\n"A ferry **carried** 300 pilgrims from Brindisi to Corfu on Sunday ."\n"""\n'
        "transport_event = Transport(\n")
    context = ontology.render_context("Movement:Transport")
    assert context.startswith("from typing import List\n\nclass Entity:\n") and task.prompt.startswith(context)


def test_multi_token_trigger_is_marked_at_both_ends():
    mention = EventMention("d", "s", ("They", "set", "up", "camp"), "Movement:Transport", (1, 3, "set up"), ())
    assert mention.marked_sentence == "They **set up** camp"


# -- readers ------------------------------------------------------------------------------------------


def test_sample_is_ours_and_varied():
    mentions = read_events(SAMPLE_PATH)
    assert 20 <= len(mentions) <= 30 and len({m.event_type for m in mentions}) >= 10
    assert all(m.doc_id == "leti-sample" for m in mentions)


def test_oneie_round_trip(tmp_path):
    mentions = read_events(SAMPLE_PATH)
    write_oneie(mentions, tmp_path / "out.jsonl")
    assert read_events(tmp_path / "out.jsonl") == mentions


@needs_shared
def test_textee_and_geneva_files_read():
    textee = read_events(SHARED_EAE / "textee_demo" / "demo_output.json")
    assert len(textee) == 4 and {m.event_type for m in textee} == {"Life:Die", "Conflict:Attack"}
    assert sum(len(m.arguments) for m in textee) == 8
    geneva = read_events(SHARED_EAE / "geneva_sample" / "train-s100.json")
    assert geneva and all(a.entity_type is None for m in geneva for a in m.arguments)


def test_dygiepp_documents(tmp_path):
    doc = {"doc_key": "d1", "sentences": [["Rebels", "shelled", "the", "town", "."], ["Police", "arrested", "two", "men", "."]],
           "ner": [[[0, 0, "PER"], [3, 3, "GPE"]], [[5, 5, "ORG"], [8, 8, "PER"]]],
           "events": [[[[1, "Conflict.Attack"], [0, 0, "Attacker"], [3, 3, "Place"]]], [[[6, "Justice.Arrest-Jail"], [5, 5, "Agent"], [8, 8, "Person"]]]]}
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(doc) + "\n")
    first, second = read_events(path)
    assert (first.event_type, first.trigger, first.arguments[1]) == ("Conflict:Attack", (1, 2, "shelled"), Argument(3, 4, "town", "Place", "GPE"))
    assert second.tokens[0] == "Police" and second.arguments == (Argument(0, 1, "Police", "Agent", "ORG"), Argument(3, 4, "men", "Person", "PER"))


def test_malformed_rows_name_the_problem(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"tokens": ["a"], "event_mentions": [{"event_type": "Life:Die", "trigger": {"start": 0, "end": 3}}]}) + "\n")
    with pytest.raises(leti_env.DatasetFormatError, match=r"bad.jsonl, line 1: span \[0, 3\) is outside the sentence's 1 tokens"):
        read_events(bad)
    bad.write_text(json.dumps({"sentence": "x"}) + "\n")
    with pytest.raises(leti_env.DatasetFormatError, match=r"line 1: missing \['tokens', 'event_mentions'\]"):
        read_events(bad)
    with pytest.raises(FileNotFoundError, match="event data not found"):
        read_events(tmp_path / "nope.jsonl")
    with pytest.raises(KeyError, match="event type 'Life:Dance' is not in the ACE05 ontology"):
        ace05().event("Life:Dance")


# -- verifier feedback and reward -------------------------------------------------------------------------

FERRY = '    vehicle=[VEH("ferry")],\n'
REST = '    artifact=[PER("pilgrims")],\n    origin=[GPE("Brindisi")],\n    destination=[GPE("Corfu")],\n'
FEEDBACK_CASES = {
    "gold-with-article-and-modifier": ('    vehicle=[VEH("a ferry")],\n    artifact=[PER("300 pilgrims")],\n    origin=[GPE("Brindisi")],\n    destination=[GPE("Corfu")],\n)\n', "passed", ""),
    "python-error": ('    vehicles=[VEH("ferry")],\n)\n', "error", "TypeError: Transport.__init__() got an unexpected keyword argument 'vehicles'"),
    "unknown-entity-class": ('    vehicle=[BOAT("ferry")],\n)\n', "error", "NameError: name 'BOAT' is not defined"),
    "not-entity-values": ('    vehicle=["ferry"],\n)\n', "error", "ValueError: Expecting a list of Entity instance for role vehicle with .name attribute, but got a list of <class 'str'>"),
    "not-a-list": ("    vehicle=None,\n)\n", "error", "ValueError: Expecting a list of Entity instance for role vehicle, but got <class 'NoneType'>"),
    "wrong-role": ('    vehicle=[VEH("ferry"), PER("pilgrims")],\n' + REST.split("\n", 1)[1] + ")\n", "error", 'ValueError: A successfully identified argument "pilgrims" is assigned to wrong role "Vehicle"'),
    "not-a-gold-argument": (FERRY + REST + '    agent=[PER("Sunday")],\n)\n', "error", 'ValueError: An identified argument "Sunday" does not match any ground truth argument.'),
    "missing-arguments": (FERRY + ")\n", "error", "ValueError: Only 1 out of 4 arguments are correctly identified: {'ferry'}"),
    "syntax-error": ('    vehicle=[VEH("ferry")\n)\n', "syntax_error", "SyntaxError"),
    "text-not-in-sentence-is-ignored": (FERRY + REST + '    agent=[ORG("Neptune Lines")],\n)\n', "passed", ""),
}


@pytest.fixture(scope="module")
def eae_env():
    return gym.make("LETI-EAE").unwrapped


def test_gold_completions_get_reward_one_and_f1_one(eae_env):
    results = eae_env.run_many([(t, t.reference_solution) for t in eae_env.tasks])
    assert [r.reward for r in results] == [1.0] * len(eae_env.tasks)
    mentions = read_events(SAMPLE_PATH)
    predictions = [parse_arguments(t.prompt.splitlines()[-1] + "\n" + t.reference_solution) for t in eae_env.tasks]
    for mode in ("head", "exact"):
        assert score(predictions, mentions, mode)["arg_c_f1"] == 1.0


@pytest.mark.parametrize("case", sorted(FEEDBACK_CASES))
def test_each_feedback_class(eae_env, case):
    completion, status, needle = FEEDBACK_CASES[case]
    result = eae_env.run(eae_env.tasks[0], completion)
    assert result.status == status, result.feedback
    assert needle in result.feedback
    assert "Brindisi', 'Origin'" not in result.feedback  # the gold line never appears in feedback


def test_stricter_checks_are_options(tmp_path):
    strict = load_eae(check_entity_types=True, check_spans=True)[0]
    default = load_eae()[0]
    wrong_type = '    vehicle=[WEA("ferry")],\n' + REST + ")\n"
    hallucinated = FERRY + REST + '    agent=[ORG("Neptune Lines")],\n)\n'
    strict_results = leti_env.execute_many([strict.program(wrong_type), strict.program(hallucinated)])
    default_results = leti_env.execute_many([default.program(wrong_type), default.program(hallucinated)])
    assert [r.passed for r in default_results] == [True, True]  # LeTI checks neither
    assert "Entity type WEA is not allowed for role vehicle (allowed: VEH)" in strict_results[0].feedback
    assert 'Argument "Neptune Lines" is not a span of the sentence' in strict_results[1].feedback


def test_stop_strings_fixed_and_authors_quirk():
    text = '    org=[ORG("Studio #9")],\n)\n# done\nprint(event)\n'
    assert eae_postprocess(text) == '    org=[ORG("Studio #9")],\n)'
    assert eae_postprocess(text, authors_stop_split=True) == '    org=[ORG("Studio '  # cut inside the argument


# -- metrics --------------------------------------------------------------------------------------------


def test_f1_on_crafted_predictions_equals_hand_computed_values():
    mention = read_events(SAMPLE_PATH)[0]  # gold: ferry/Vehicle, pilgrims/Artifact, Brindisi/Origin, Corfu/Destination
    predicted = [("vehicle", "VEH", "the ferry"),    # right span, right role
                 ("artifact", "PER", "300 pilgrims"),  # head match (exact span differs)
                 ("origin", "GPE", "Corfu"),           # gold span, wrong role
                 ("place", "GPE", "Sunday"),           # not a gold span
                 ("agent", "ORG", "Atlantis")]         # not in the sentence: not counted
    head = score([predicted], [mention], "head")
    # Arg-I: 4 predicted spans, 3 are gold spans; 4 gold -> P 3/4, R 3/4. Arg-C: 2 of 4 -> P 1/2, R 1/2
    assert (head["arg_i_precision"], head["arg_i_recall"], head["arg_i_f1"]) == (0.75, 0.75, 0.75)
    assert (head["arg_c_precision"], head["arg_c_recall"], head["arg_c_f1"]) == (0.5, 0.5, 0.5)
    exact = score([predicted], [mention], "exact")
    # exact: "300 pilgrims" (span 3-5) is not the gold span (4-5): Arg-I 2/4, Arg-C 1/4
    assert (exact["arg_i_precision"], exact["arg_c_precision"]) == (0.5, 0.25)
    assert score([None], [mention])["arg_i_recall"] == 0.0  # unparsable code predicts nothing


def test_parse_arguments():
    code = 'x = Transport(\n    vehicle=[VEH("ferry"), VEH(name="boat")],\n    artifact=["men"],\n)\nprint(1)\n'
    assert parse_arguments(code) == [("vehicle", "VEH", "ferry"), ("vehicle", "VEH", "boat"), ("artifact", None, "men")]
    assert parse_arguments("x = Transport(\n    vehicle=[VEH(\n") is None
