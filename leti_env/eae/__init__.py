"""Event argument extraction (EAE) posed as code: Code4Struct's rendering, LeTI's verifier, Arg-I/C metrics.

>>> import gymnasium as gym, leti_env
>>> env = gym.make("LETI-EAE")                     # the shipped sample; data_path= for your own ACE05
"""

from .metrics import parse_arguments, score
from .ontology import EventType, Ontology, ace05, load_ontology
from .readers import Argument, EventMention, read_events, write_oneie
from .tasks import eae_postprocess, eae_task

SAMPLE_PATH = __import__("pathlib").Path(__file__).with_name("data") / "sample.jsonl"


def load_eae(data_path=None, *, format: str = "auto", ontology_path=None, k_shot: int = 0, shots_path=None,
             check_entity_types: bool = False, check_spans: bool = False, authors_stop_split: bool = False):
    """``CodeTask``s for every event mention in ``data_path`` (default: leti's own small sample).

    ``k_shot`` > 0 adds up to that many examples of the same event type from ``shots_path`` (e.g. the
    training file), in file order, as Code4Struct's k-shot prompts do.
    """
    ontology = load_ontology(ontology_path)
    mentions = read_events(data_path or SAMPLE_PATH, format)
    pool = read_events(shots_path, format) if k_shot and shots_path else []
    tasks = []
    for mention in mentions:
        shots = [m for m in pool if m.event_type == mention.event_type and m != mention][:k_shot]
        tasks.append(eae_task(mention, ontology, examples=shots, check_entity_types=check_entity_types,
                              check_spans=check_spans, authors_stop_split=authors_stop_split))
    return tasks


__all__ = ["SAMPLE_PATH", "Argument", "EventMention", "EventType", "Ontology", "ace05", "eae_postprocess", "eae_task",
           "load_eae", "load_ontology", "parse_arguments", "read_events", "score", "write_oneie"]
