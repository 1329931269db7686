"""What the model's queries return: one named tuple per kind of result."""

from typing import NamedTuple, Optional, Tuple

from .circuit import EigenSummary, heads_label


class HeadReport(NamedTuple):
    """One head's line of :meth:`Model.head_report` (mi_head_report)."""
    layer: int
    head: int
    ov: EigenSummary                   #: eigenvalues of the token OV circuit
    qk: EigenSummary                   #: eigenvalues of the token QK circuit
    prev_token_share: float            #: positional QK signature (NaN: not asked / no W_pos)
    prev_token_attention: float        #: behaviour: mean attention on the previous position
    duplicate_token_attention: float   #: behaviour: on earlier copies of the query token
    induction_attention: float         #: behaviour: after an earlier copy of the query token


class SkipTrigram(NamedTuple):
    """One triple "src ... dst -> out" of :meth:`Model.skip_trigrams` (mi_skip_trigram)."""
    layer: int
    head: int
    src: int
    dst: int
    out: int
    qk_z: float
    ov_z: float
    score: float


class Path(NamedTuple):
    """A path through heads (direct path: no heads) and its OV product's
    Frobenius norm, as :meth:`Model.paths` lists it."""
    heads: Tuple[Tuple[int, int], ...]
    norm: float

    @property
    def order(self) -> int:
        return len(self.heads)

    @property
    def label(self) -> str:
        return heads_label(self.heads) if self.heads else "direct"


class Part(NamedTuple):
    """One part of the logits from :meth:`Model.attribute`. ``source`` is
    "embed", "value_bias", "out_bias" or "unembed_bias"; ``heads`` the path's
    (layer, head) pairs; per reported position: ``token_logit`` (the chosen
    token's logit), ``logit_diff`` (minus the ``vs`` token's) and with
    ``full_logits`` ``logits`` (positions × d_vocab); None when not asked."""
    source: str
    source_layer: int
    heads: Tuple[Tuple[int, int], ...]
    positions: list
    token_logit: Optional[list]
    logit_diff: Optional[list]
    logits: Optional[list]

    @property
    def order(self) -> int:
        return len(self.heads)

    @property
    def label(self) -> str:
        """"direct", "L0H3->L1H0", "b_V L0H1", "b_O[0]->L1H2", "b_U"."""
        path = heads_label(self.heads)
        if self.source == "embed":
            return path or "direct"
        if self.source == "value_bias":
            first, rest = self.heads[0], heads_label(self.heads[1:])
            return f"b_V L{first[0]}H{first[1]}" + ("->" + rest if rest else "")
        if self.source == "out_bias":
            return f"b_O[{self.source_layer}]" + ("->" + path if path else "")
        return "b_U"


class Forward(NamedTuple):
    """:meth:`Model.forward` with ``patterns`` or ``resid``: the logits
    (n × d_vocab), the attention patterns ([L][H][n][n]) and the residual
    streams ([L + 1][n][d_model]); None for what was not asked."""
    logits: list
    patterns: Optional[list]
    resid: Optional[list]


class HeadRole(NamedTuple):
    """One head's role and its evidence (mi_head_roles); see Model.head_roles."""
    layer: int
    head: int
    role: str                   #: one of ROLES
    passed: frozenset           #: every role whose test the head passed
    ov_copying_score: float
    ov_top1: float
    ov_top1_chance: float       #: 1 / d_vocab
    qk_same_token: float
    prev_token_share: float
    prev_token_share_chance: float
    prev_token_attention: float
    prev_token_uniform: float   #: the same score of uniform causal attention
    duplicate_token_attention: float
    duplicate_token_uniform: float
    induction_attention: float
    induction_uniform: float
    k_composition: Optional[Tuple[int, int, float, float]]  #: strongest earlier (layer, head, score, z)
    k_chance: Tuple[float, float]  #: composition baseline (mean, sd)


class RolePartner(NamedTuple):
    """A previous-token head (layer, head) an induction head (reader) K-composes with."""
    reader: Tuple[int, int]
    layer: int
    head: int
    score: float
    z: float
