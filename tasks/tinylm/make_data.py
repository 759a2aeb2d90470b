"""
The prepare step of tinylm: writes data/train.bin (for the run) and heldout/val.bin (for
the evaluator only). Usage: python make_data.py   (in the folder that should hold them)

The corpus is generated, not downloaded: a small synthetic world (people, their towns,
jobs, pets and friends) described in English-like sentences with real grammar, facts that
stay true across documents, counting and small sums. Every byte comes from our own 64-bit
PRNG and integer arithmetic only, so the corpus is identical on every machine and Python
version; the training text's sha256 is checked below.

The held-out text is drawn from the same world with a seed derived from a secret the
runner passes in AUTOSWARM_HELDOUT_SECRET (the coordinator makes one per task and hands it
to workers only; `autoswarm task run` keeps one in its local folder), never from a seed in
this file: this file is public, and a run that rebuilt the held-out text from it could
learn it by heart. Without a secret (by hand, in tests) it uses the public VAL_SEED, which
anyone can recompute, and says so.
"""

import hashlib
import os

# ---------------------------------------------------------------------------
# Corpus settings (fixed)
# ---------------------------------------------------------------------------

WORLD_SEED = 20240307  # who lives where; shared by train and val so facts carry over
TRAIN_SEED = 1  # the training text
VAL_SEED = 0x6A09E667F3BCC908  # the held-out text when no secret is given (public)
SECRET_ENV = "AUTOSWARM_HELDOUT_SECRET"  # the secret the held-out text's seed comes from
TRAIN_BYTES = 1_500_000  # bytes of training text
VAL_BYTES = 160_000  # bytes of held-out text
# sha256 of data/train.bin and of heldout/val.bin made from VAL_SEED
TRAIN_SHA256 = "b860c2ca46afcad53744a2626aabe169b01d00badd2d686a643fbff40240c8b8"
VAL_SHA256 = "06b97515cfa0060ba79f458372ca7b80d173dbae9f8f172bcf6e56aa1dc75d59"

# ---------------------------------------------------------------------------
# PRNG: splitmix64 (integer-only, identical everywhere; no `random` module)
# ---------------------------------------------------------------------------

MASK64 = (1 << 64) - 1


class Rng:
    def __init__(self, seed):
        self.state = seed & MASK64

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def below(self, n):
        return self.next() % n

    def pick(self, items):
        return items[self.next() % len(items)]

    def zipf(self, items):
        # item i has weight 1/(i+1): a few common words, a long tail of rare ones
        total = ZIPF_TOTALS[len(items)]
        r = self.next() % total
        i = 0
        while r >= ZIPF_WEIGHTS[i]:
            r -= ZIPF_WEIGHTS[i]
            i += 1
        return items[i]


ZIPF_WEIGHTS = [720720 // (i + 1) for i in range(64)]  # 720720 = lcm(1..16), integers only
ZIPF_TOTALS = {n: sum(ZIPF_WEIGHTS[:n]) for n in range(1, 65)}

# ---------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------

FEMALE_NAMES = (
    "ada alba anna ayla bea cleo dora edda elsa faye gwen hana ida iris jana kira lena lia "
    "mara mira nell nora olga pia rosa runa sara tess una vera wren yara zoe"
).split()
MALE_NAMES = (
    "abel aron bo carl dag eli finn gus hugo ivo jan karl lars leo milo nils odd otto "
    "paul per rolf sam sten tom ulf vic walt yan"
).split()
NAMES = [n.capitalize() for n in FEMALE_NAMES + MALE_NAMES]
TOWNS = (
    "ashford brook dunmore eastwick fairbank glenrock harlow ironbridge kingsley "
    "larkhill millbrook northgate oakridge pinecrest redwater stonebury westmere"
).split()
TOWNS = [t.capitalize() for t in TOWNS]
JOBS = (
    "baker farmer teacher doctor painter sailor miller weaver potter singer builder "
    "fisher tailor smith clerk nurse"
).split()
PETS = "cat dog horse goat rabbit parrot duck pig hen owl fox mouse".split()
COLORS = "red blue green yellow black white brown grey orange purple".split()
FOODS = "bread soup apples cheese fish rice eggs pears honey beans cake plums".split()
NOUNS = (
    "house tree river road garden window door boat field hill bridge lamp table book "
    "basket stone cart fence wall well barn mill shop market song letter cup chair"
).split()
ADJECTIVES = (
    "old small big quiet warm cold dark bright long short tall green wide narrow new "
    "empty heavy soft round little"
).split()
PLACES_ON = "the hill|the bridge|the road|the river bank|the market square".split("|")
VERBS = (  # (present 3rd person, past) for a subject and an object
    ("sees", "saw"), ("finds", "found"), ("paints", "painted"), ("builds", "built"),
    ("carries", "carried"), ("fixes", "fixed"), ("opens", "opened"), ("cleans", "cleaned"),
    ("sells", "sold"), ("buys", "bought"), ("likes", "liked"), ("draws", "drew"),
)
WEEKDAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
COUNTABLES = "apples pears plums eggs buns nuts shells coins cups letters".split()
NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty"
).split()

# ---------------------------------------------------------------------------
# The world: facts fixed by WORLD_SEED
# ---------------------------------------------------------------------------


def make_world():
    rng = Rng(WORLD_SEED)
    people = []
    for i, name in enumerate(NAMES):
        people.append({
            "name": name,
            "she": i < len(FEMALE_NAMES),
            "town": rng.pick(TOWNS),
            "job": rng.pick(JOBS),
            "pet": rng.pick(PETS),
            "color": rng.pick(COLORS),
            "food": rng.pick(FOODS),
            "age": 18 + rng.below(60),
        })
    for i, p in enumerate(people):
        p["friend"] = people[(i + 1 + rng.below(len(people) - 1)) % len(people)]["name"]
    return people


# ---------------------------------------------------------------------------
# Sentences
# ---------------------------------------------------------------------------


def a_or_an(word):
    return ("an " if word[0] in "aeiou" else "a ") + word


def plural(noun):
    if noun.endswith(("s", "sh", "ch", "x")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    if noun == "mouse":
        return "mice"
    return noun + "s"


def noun_phrase(rng, count):
    adj = rng.zipf(ADJECTIVES) + " " if rng.below(2) else ""
    noun = rng.zipf(NOUNS)
    if count == 1:
        return "the " + adj + noun if rng.below(2) else a_or_an(adj + noun)
    return NUMBER_WORDS[count] + " " + adj + plural(noun)


def fact_sentence(rng, p, kinds=9):
    name, pron = p["name"], ("she" if p["she"] else "he")
    poss = "her" if p["she"] else "his"
    kind = rng.below(kinds)
    if kind == 0:
        return f"{name} lives in {p['town']}."
    if kind == 1:
        return f"{name} is {a_or_an(p['job'])} in {p['town']}."
    if kind == 2:
        return f"{pron} has {a_or_an(p['color'])} {p['pet']}."
    if kind == 3:
        return f"every {rng.pick(WEEKDAYS)} {name} eats {p['food']} with {p['friend']}."
    if kind == 4:
        k = 1 + rng.below(9)
        return f"{name} is {p['age']} years old, so in {k} years {pron} will be {p['age'] + k}."
    if kind == 5:
        return f"the {p['job']} and {poss} friend {p['friend']} walk to {rng.pick(PLACES_ON)}."
    if kind == 6:
        return f"Q: where does {name} live? A: in {p['town']}."
    if kind == 7:
        return f"Q: what does {name} keep? A: {a_or_an(p['pet'])}, and it is {p['color']}."
    return f"{poss} favourite food is {p['food']}."


def scene_sentence(rng, p):
    name, pron = p["name"], ("she" if p["she"] else "he")
    kind = rng.below(5)
    if kind == 0:
        present, past = rng.pick(VERBS)
        verb = past if rng.below(2) else present
        obj = noun_phrase(rng, 1 if rng.below(3) else 2 + rng.below(6))
        return f"{name} {verb} {obj} near {rng.pick(PLACES_ON)}."
    if kind == 1:
        n = 2 + rng.below(7)
        noun = plural(rng.zipf(NOUNS))
        return f"{pron} counted the {noun}: " + ", ".join(NUMBER_WORDS[1 : n + 1]) + "."
    if kind == 2:
        a, b = rng.below(10), rng.below(11)
        thing = rng.pick(COUNTABLES)
        return f"{name} had {a} {thing} and got {b} more, so now {pron} has {a + b} {thing}."
    if kind == 3:
        count = 1 if rng.below(2) else 2 + rng.below(5)
        subject = noun_phrase(rng, count)
        verb = "is" if count == 1 else "are"
        return f"{subject} {verb} {rng.zipf(ADJECTIVES)} today."
    return f"{pron} is happy because the {p['pet']} is {rng.zipf(ADJECTIVES)}."


def capitalise(sentence):
    return sentence[0].upper() + sentence[1:]


def document(rng, world):
    p = rng.pick(world)
    sentences = [fact_sentence(rng, p, kinds=2)]  # introduce the person by name first
    for _ in range(2 + rng.below(6)):
        s = fact_sentence(rng, p) if rng.below(2) else scene_sentence(rng, p)
        sentences.append(capitalise(s))
    return " ".join(sentences) + "\n\n"


def generate(seed, n_bytes):
    """Exactly n_bytes of text from the world, deterministic in seed."""
    world = make_world()
    rng = Rng(seed)
    parts, size = [], 0
    while size < n_bytes:
        doc = document(rng, world)
        parts.append(doc)
        size += len(doc)
    return "".join(parts).encode("ascii")[:n_bytes]


# ---------------------------------------------------------------------------
# Main: write data/train.bin (for the run) and heldout/val.bin (for the evaluator)
# ---------------------------------------------------------------------------


def heldout_seed():
    """(seed, expected sha256 or None) of the held-out text: from the secret when given."""
    secret = os.environ.get(SECRET_ENV, "")
    if not secret:
        print(f"warning: no {SECRET_ENV}: held-out text from the public VAL_SEED (recomputable)")
        return VAL_SEED, VAL_SHA256
    digest = hashlib.sha256(b"tinylm held-out text\0" + secret.encode()).digest()
    return int.from_bytes(digest[:8], "little"), None


def write(path, data, expected_sha256):
    digest = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None:
        assert digest == expected_sha256, f"{path}: sha256 {digest} != {expected_sha256}"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    print(f"wrote {path}: {len(data):,} bytes, sha256 {digest[:16]}")


if __name__ == "__main__":
    # the runner names the folders; by hand they are data/ and heldout/ in the current folder
    data_dir = os.environ.get("AUTOSWARM_DATA_DIR", os.path.join(os.getcwd(), "data"))
    heldout_dir = os.environ.get("AUTOSWARM_HELDOUT_DIR", os.path.join(os.getcwd(), "heldout"))
    write(os.path.join(data_dir, "train.bin"), generate(TRAIN_SEED, TRAIN_BYTES), TRAIN_SHA256)
    val_seed, val_sha256 = heldout_seed()
    write(os.path.join(heldout_dir, "val.bin"), generate(val_seed, VAL_BYTES), val_sha256)
    print("done")
