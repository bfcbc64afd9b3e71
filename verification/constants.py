"""Every protocol constant, in one place.

Changing any value in this module changes the protocol: bundles made under one value are rejected
(or, worse, accepted with other semantics) by verifiers using another. Each change therefore
bumps PROTOCOL_VERSION. The comment beside each constant says what breaks if it changes.
"""

from __future__ import annotations

# Version tag carried in every bundle header and mixed into every PRF domain. Breaks: all bundles,
# all derived seeds; a verifier refuses bundles of any other version.
PROTOCOL_VERSION = 6

# Domain-separation prefix of every hash in the protocol. Breaks: every seed, noise, sketch vector,
# Merkle root and signature message.
PRF_PREFIX = b"rollproof/v6/"

# ---- windows and randomness -----------------------------------------------------------------
# Blocks per window. Breaks: window numbering, hence problem seeds and deadlines.
WINDOW_BLOCKS = 20

# Seconds after the upload deadline before the opening beacon round may be emitted. The opening
# round is round_at(deadline_time + OPENING_BUFFER_S) + 1. Lowering it lets a miner that controls
# block timing see the opening randomness before its commitment lands; changing it moves the round.
OPENING_BUFFER_S = 6

# ---- generation parameters (section 15: fixed per checkpoint by its manifest) -----------------
# The sampling temperature, group size, completion length and environment mix are not constants:
# each checkpoint's manifest fixes them and the model fingerprint binds them. These are the base
# checkpoint's values (the model loaded from its source, before any training) and the ranges every
# checkpoint must respect. Changing BASE_GENERATION changes the base model's fingerprint.
BASE_GENERATION = {
    # measured on SmolLM2-135M-Instruct (reports/task_zone.md, issue 28): two-term addition with 1-2
    # digit terms is where the base model's GREEDY accuracy is low (0.40 of 48 problems; two
    # 2-digit terms alone 0.25-0.34) while groups of 8 at T=0.7 still carry signal (about half of
    # them have reward variance). The previous default, two 1-digit terms, was solved 0.89-0.94
    # greedily: training on it only sharpened the sampler. Breaks: the base fingerprint.
    "temperature_milli": 700,
    "group_size": 8,
    "groups": 8,
    "max_new_tokens": 24,
    "environments": [
        {"name": "add", "weight": 1,
         "params": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2, "format_credit_milli": 0}},
    ],
}
# The reasoning-gym release (PyPI "reasoning-gym", importlib.metadata version) whose generators the
# library-backed environments (rg_chain_sum, rg_basic_arithmetic; verification/environments/library.py)
# call: their problems are a function of that code and a seed, so the release is part of the
# protocol, and the SHA-256 of each generator file is pinned beside it. Breaks: every rg_* problem
# (another release may draw other items from the same seed); nodes refuse params naming an rg_*
# environment unless exactly this release, with the pinned files, is installed (TaskLibraryError).
REASONING_GYM_VERSION = "0.1.25"
# Temperature range in thousandths. token_t = argmax_j(log_softmax(logits/T)_j + G_j). Below ~0.1
# the logprobs the trainer receives saturate; above 2 the text is noise.
MIN_TEMPERATURE_MILLI = 100
MAX_TEMPERATURE_MILLI = 2000
# Rollouts per group. GRPO advantages need at least 2; more than 64 makes groups too large to open.
MIN_GROUP_SIZE = 2
MAX_GROUP_SIZE = 64
# Largest weight of one environment in the mix (weights are small integers).
MAX_ENVIRONMENT_WEIGHT = 1000

# ---- checkpoints (section 15) ----------------------------------------------------------------
# An announcement that lands in window v applies from windows >= v + ACTIVATION_WINDOWS (the
# contract refuses earlier from_window). Gives miners and validators a full window to fetch and
# check the checkpoint before it is in force. Breaks: which checkpoint a window uses.
ACTIVATION_WINDOWS = 2
# Largest checkpoint manifest a node parses, and largest file it names. Breaks: bigger checkpoints.
MAX_MANIFEST_BYTES = 64 * 1024
MAX_CHECKPOINT_FILE_BYTES = 4 * 1024 * 1024 * 1024
# Longest checkpoint location URI (the registry stores 200 bytes). Breaks: long URIs.
MAX_CHECKPOINT_LOCATION_BYTES = 200

# ---- proof of learning: the training record and its replay (section 16, issue 26) --------------
# Largest training record (training.json) a node parses: about 480,000 trained rows at 67 bytes a
# row leaf. Breaks: records of larger training spans (the trainer must announce more often).
MAX_TRAINING_RECORD_BYTES = 32 * 1024 * 1024
# Largest report or bundle a record names under its data/ directory (the bundle cap). Breaks: none
# while bundles stay within MAX_BUNDLE_BYTES.
MAX_TRAINING_DATA_BYTES = 64 * 1024 * 1024
# Replay tolerance: the replayed adapter may differ from the announced one by at most this share of
# the announced update, ||A_replayed - A_announced|| / ||A_announced - A_start|| (L2 over every
# adapter tensor), and the replayed optimizer moments likewise relative to their own norm. Measured
# (docs/security.md section 8): honest drift reaches 6.7e-4 on SmolLM2 when the float summation
# order changes (AdamW's sign-like first step amplifies it), so 5e-3 keeps 7x room for torchrun and
# other CPUs; the cheats only the tolerance catches (a false learning rate, a tampered adapter, a
# skipped step) sit at 0.09 and above. Lowering it voids honest checkpoints replayed on other
# hardware; raising it lets a trainer hide a larger change in each checkpoint.
REPLAY_REL_TOL = 5e-3
# Held-out rollouts whose reward the replay may find different from the record's, per model
# evaluated by the gate: a seeded draw within float noise of a tie can flip between machines.
# Measured (docs/security.md section 8): 0 across thread counts; f flips per model let a trainer
# move the gate's paired mean by up to 2f / (problems x rollouts), at the defaults (48 x 2) 0.021
# for f = 1, about GATE_MARGIN (f = 2 allowed twice the margin). Breaks: 0 voids honest checkpoints
# that met such a tie; more lets a trainer shift the gate by that many rollouts.
GATE_REPLAY_FLIPS = 1
# Net drop in held-out problems solved greedily (parent's count minus candidate's) below which the
# gate's greedy measure never withholds; at or above it, it withholds when the accuracy also falls by
# more than gate_margin (docs/protocol.md section 16). Measured (docs/security.md section 6b): with 1
# (the margin alone, 0.02 < one problem of 32 or 48), argmax near-ties flipping one problem withheld
# 4 of 26 candidates of one run and 7 in a row in another while the sampled measure rose, and every
# withhold returns the trainer to the announced weights: the loop stalled. Breaks: trainer and
# validators with other values disagree on whether a candidate should have been withheld (replay
# mismatch); larger lets a real greedy regression of that many problems through (with
# GATE_REPLAY_FLIPS, a dishonest record hides 2 more).
GREEDY_GATE_MIN_DROP = 2

# ---- checkpoint announcement bound (section 15, issue 24) ---------------------------------------
# Latest from_window an announcement may name, in windows after the window it lands in: the EVM
# registry refuses later ones ("announcement too far ahead") and readers count them invalid on
# every chain (on subtensor from_window is exactly landing + ACTIVATION_WINDOWS, within it). 8
# windows (32 minutes at 20 blocks of 12 s) leaves a trainer room to schedule a checkpoint a few
# windows ahead, and bounds how long one bad announcement can hold back later ones ("not after the
# last announcement") when nobody voids it: a from_window of 2**64 - 1 is refused outright.
# Breaks: which announcements every node counts as valid (consensus); raising it lengthens that
# hold; below ACTIVATION_WINDOWS no announcement could land (the registry's constructor refuses).
MAX_ANNOUNCE_AHEAD_WINDOWS = 8

# ---- sampling proof (seeded Gumbel-max, counter-based noise) ----------------------------------

# A challenged token passes when its perturbed score is within this margin (nats) of the best
# perturbed score. Honest recompute moves the score difference between the chosen token and its
# competitors (the 8 best perturbed scores) by at most 7.7e-5 nats on SmolLM2 and 1.9e-5 on the
# tiny model between recompute configurations (docs/security.md section 3, reports/steering_*.md),
# so the margin is 13x the worst drift measured. A miner has a second valid token at about
# 0.6 x margin of positions (1.0-1.4% at the v2 margin of 0.02 nats), so the margin bounds how much
# it can steer its completions (their length, say); lowering it below honest cross-device drift
# (not measured here: no accelerator) rejects honest miners.
GUMBEL_MARGIN = 1e-3

# Bits of each Gumbel uniform, from one 64-bit mixed counter (u = (z >> 11 + 0.5) / 2^53: every
# value a float64 represents exactly). Breaks: every noise value, hence every token.
UNIFORM_BITS = 53

# ---- per-token logprob check -----------------------------------------------------------------
# A reported logprob passes when |reported - recomputed| <= this (nats). Honest fp32 drift is
# below 1e-5; bf16 inference moves logprobs by up to ~1e-2. Raising it lets low-precision or
# perturbed models through; lowering it below cross-hardware fp32 drift causes false rejections.
LOGPROB_ABS_TOL = 2e-3

# ---- hidden-state sketch (per-token commitment) -----------------------------------------------
# Number of random +-1 projections of the unit-normalized final hidden state per token.
# Breaks: sketch layout and proof size (2 bytes per projection per token).
SKETCH_DIM = 4

# Fixed-point scale of a sketch coordinate stored as int16 (resolution 1/SCALE, range +-32767/SCALE).
# Breaks: the meaning of stored sketches.
SKETCH_SCALE = 1024

# A token's sketch passes when every coordinate is within this many fixed-point units of the
# recomputed one. Measured honest drift is 0-1 unit (rounding); a different model differs by
# ~1000 units. Raising it admits near-copies of the model; lowering it rejects honest rounding.
SKETCH_TOL = 8

# ---- what a validator samples -----------------------------------------------------------------
# Groups checked per miner per window, chosen by the opening beacon. Every group is checked when a
# bundle has fewer. Lowering it lowers the chance of catching a miner that forges a few groups.
GROUPS_CHECKED_PER_MINER = 4

# ---- generation limits ------------------------------------------------------------------------
# Upper bound on any checkpoint's max_new_tokens (a rollout without EOS must be exactly the
# checkpoint's max_new_tokens long). Breaks: bundles of longer checkpoints are refused at parse.
MAX_NEW_TOKENS = 512

# Longest prompt, in tokens. Breaks: which environment instances are valid.
MAX_PROMPT_TOKENS = 512
# Longest environment prompt text, in UTF-8 bytes, that an environment's params may allow (checked
# when generation params are parsed, from each environment's worst case). A byte-level tokenizer
# never makes more tokens than bytes, so any prompt then fits MAX_PROMPT_TOKENS with 64 tokens left
# for the chat template (SmolLM2's takes 30, the tiny model's 19). Breaks: which generation params a
# checkpoint may announce; raising it past MAX_PROMPT_TOKENS - template lets a trainer announce
# problems no honest miner can submit (bundle_format).
MAX_ENV_PROMPT_BYTES = 448

# ---- GRPO -------------------------------------------------------------------------------------
# Advantage = (r - mean) / (std + GRPO_EPS), population std. Breaks: advantage values.
GRPO_EPS = 1e-4

# Advantages are stored and compared in fixed point (micro-units) so that no float formatting
# enters the canonical bytes. Breaks: advantage encoding.
ADVANTAGE_SCALE = 1_000_000

# ---- bundle limits ----------------------------------------------------------------------------
# Largest bundle a verifier parses. Larger ones are rejected before decoding.
MAX_BUNDLE_BYTES = 64 * 1024 * 1024
# Most groups in one bundle.
MAX_GROUPS_PER_BUNDLE = 256
# Bundle file magic.
BUNDLE_MAGIC = b"RPROOF1\n"
# Deepest nesting of JSON arrays/objects a bundle body may have; checked before the JSON parser
# runs, because a deeply nested body (b"[" * 10**5) can overflow the C stack of Python's json
# scanner and kill the validator process. A valid bundle nests 5 deep. Breaks: lowering it below 5
# rejects every bundle; raising it far (thousands) reopens the crash.
MAX_JSON_DEPTH = 16

# ---- groups per bundle (generation params' "groups", issue 24 item 5) ---------------------------
# Every bundle of a window holds exactly its checkpoint's `groups` groups (n_groups), so a miner
# commits all of its problems or none and cannot pick which prefix is trained on. Range of that
# field: at least one group (a bundle of none is `bad_params`); at most what a bundle may hold.
# Breaks: raising MIN_GROUPS refuses checkpoints that announce fewer. MAX_GROUPS is the bundle's own
# limit, not a second choice: params allowing more would announce bundles no verifier parses.
MIN_GROUPS = 1
MAX_GROUPS = MAX_GROUPS_PER_BUNDLE

# ---- scoring ----------------------------------------------------------------------------------
# Window score of a miner whose bundle was accepted = floor(SCORE_SCALE * n ** SCORE_EXPONENT) for
# its n credited rows, computed in integers as isqrt(n**3 * SCORE_SCALE**2) (SCORE_EXPONENT is 3/2);
# any failure scores 0. A superlinear exponent makes splitting the same work over many hotkeys
# (sybils) a loss. Scores are integers so every implementation writes the same report bytes and
# weights (a float pow differs between C libraries in the last bit). Breaks: every weight.
SCORE_EXPONENT = 1.5
SCORE_SCALE = 1000
# Weights are written as u16 scaled so the best miner gets U16_MAX. Breaks: weight encoding.
U16_MAX = 65535

# ---- checkpoint announcements in a subtensor commitment (docs/protocol.md sections 12, 15) ----
# First bytes of an announcement commitment ("rollproof checkpoint", protocol 3). Breaks: every
# reader of announcements; a reader of another magic finds no announcement (the base model).
ANNOUNCEMENT_MAGIC = b"rc3"
# Largest announcement the announcer sends: 75 fixed bytes + a location base of at most 75.
# Breaks: raising it above 163 bytes (3100 / 19) lets announcements in every window of an interval
# run out of space ("Space Limit Exceeded"); lowering it refuses bases that fit today.
MAX_ANNOUNCEMENT_BYTES = 150

# ---- on-chain commitments (docs/protocol.md section 12) ----------------------------------------
# First bytes of a commitment; "rp3" is the layout of protocol 3 (the location may be a base that
# the bundle's canonical name completes). Breaks: every reader of commitments; a reader of one
# magic refuses commitments of another as bad_commitment.
COMMITMENT_MAGIC = b"rp3"
# Longest committed location string (a full URI, or a base ending in "/"). The EVM registry stores
# 256 bytes per commitment, 43 of them fixed. Breaks: raising it past 213 makes EVM commits revert;
# lowering it refuses committed locations that were valid.
MAX_LOCATION_BYTES = 200
# Largest commitment a miner sends to subtensor. The Commitments pallet charges max(bytes, 100)
# per set_commitment against MaxSpace = 3100 bytes per hotkey per tempo interval (361 blocks at
# tempo 360); one commitment per 20-block window is at most 19 in an interval, so 19 x 100 = 1900
# of 3100 (12 commitments to spare). A location base of at most 100 - 43 = 57 bytes fits. Breaks:
# raising it above 163 bytes (3100 / 19) makes late windows of a tempo refused "Space Limit
# Exceeded"; lowering it refuses public base URLs that fit today.
MAX_COMMITMENT_BYTES = 100
# File name ending of a bundle under a committed base: <base><window>/<sha256 hex>.rpb. Breaks:
# where validators look for every bundle committed by base.
BUNDLE_FILE_SUFFIX = ".rpb"

# ---- validator fetching -----------------------------------------------------------------------
# Most seconds a validator waits for one bundle download (its deadline is shorter where the
# window's bundle size bound allows: validator/defaults.py fetch_deadline_s). A miner whose storage
# is slower scores zero for the window ("fetch_failed"). Breaks: miners on slow storage.
FETCH_TIMEOUT_S = 30
