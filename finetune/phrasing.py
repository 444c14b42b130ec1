"""How users ask: request templates grouped in families, intent phrases, typos.

Everything here is data plus two small text functions. `finetune.data` combines a
family's template with a tool's intent phrase and the words for its arguments. Tools
without an entry in `INTENTS` get intents made from their registry description, so a
new tool gets requests without new code; an entry only adds domain vocabulary.

Families are the unit of the train/test split: a test family's templates are never
seen in training, nor are the validation split's (which has its own intents, too).
Each style (terse, polite, verbose, non-native, jargon, question, misspelled) has
several families so that every style is present on both sides.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from finetune.intents import INTENTS as INTENTS
from finetune.intents import VALIDATION_INTENTS


@dataclass(frozen=True)
class Family:
    """Templates of one phrasing family. `{do}` takes an imperative intent ("map the
    flooding"), `{ask}` a question intent ("how much land flooded"); `{on}` the
    words for the arguments ("between pre and post using cva")."""

    name: str
    style: str
    templates: tuple[str, ...]
    typos: float = 0.0  # share of words misspelled


FAMILIES: tuple[Family, ...] = (
    Family("terse_a", "terse", ("{do} {on}", "{do} {on}.")),
    Family("terse_b", "terse", ("{on}: {do}", "{on} -> {do}")),
    Family("terse_c", "terse", ("{do} {on} pls", "{do}, {on}, quick")),
    Family("terse_d", "terse", ("{ask} {on}?", "{ask}? {on}")),
    Family("polite_a", "polite", ("Could you {do} {on}?", "Can you please {do} {on}?")),
    Family("polite_b", "polite", ("Please {do} {on}.", "I'd like you to {do} {on}, thanks.")),
    Family("polite_c", "polite", ("Would you mind to {do} {on}?", "Kindly {do} {on}.")),
    Family(
        "verbose_a",
        "verbose",
        (
            "Hi! I'm preparing a short report for the regional authority and I need to "
            "{do} {on}. Thanks a lot in advance.",
            "Hello, for the briefing this afternoon my manager asked me to {do} {on}; "
            "could you take care of it?",
        ),
    ),
    Family(
        "verbose_b",
        "verbose",
        (
            "We've just received the imagery from the provider. As a first step, please "
            "{do} {on}, and tell me what you find.",
            "I am not a remote sensing expert, so bear with me: I want to {do} {on}. "
            "Is that possible?",
        ),
    ),
    Family(
        "verbose_c",
        "verbose",
        (
            "Our NGO is writing a grant proposal and the reviewers want evidence, so {ask} {on}?",
            "Quick context: the field team is waiting on this. {ask} {on}?",
        ),
    ),
    Family(
        "nonnative_a",
        "nonnative",
        ("Please you {do} {on}, I need for my work.", "I want that you {do} {on}."),
    ),
    Family(
        "nonnative_b",
        "nonnative",
        ("Is possible to {do} {on}? Thank you very much.", "Me need {do} {on} please."),
    ),
    Family(
        "nonnative_c",
        "nonnative",
        ("Tell me please {ask} {on}.", "Please to say me {ask} {on}."),
    ),
    Family(
        "jargon_a",
        "jargon",
        ("SITREP input needed: {do} {on}, ASAP.", "For the rapid mapping product, {do} {on}."),
    ),
    Family(
        "jargon_b",
        "jargon",
        (
            "EOC request, priority 1: {do} {on} for the damage assessment.",
            "Charter activation: {do} {on} and report figures.",
        ),
    ),
    Family(
        "jargon_c",
        "jargon",
        ("Ops need numbers for the RDNA: {ask} {on}?", "Incident cmd asks: {ask} {on}?"),
    ),
    Family("question_a", "question", ("{ask} {on}?", "So, {ask} {on}?")),
    Family("question_b", "question", ("Any idea {ask} {on}?", "Do you know {ask} {on}?")),
    Family("question_c", "question", ("I wonder {ask} {on}.", "Tell me {ask} {on}.")),
    Family("typo_a", "misspelled", ("{do} {on}", "pls {do} {on}"), typos=0.3),
    Family("typo_b", "misspelled", ("can u {do} {on}", "{ask} {on}?"), typos=0.3),
    Family("typo_c", "misspelled", ("need to {do} {on} asap", "{ask} {on}"), typos=0.35),
    # the validation families (`VALIDATION_FAMILIES`), two per style: never trained on
    Family("terse_e", "terse", ("{do} {on} now", "task: {do} {on}")),
    Family("terse_f", "terse", ("q: {ask} {on}?", "{ask} {on}, roughly?")),
    Family(
        "polite_d",
        "polite",
        ("Could I ask you to {do} {on}?", "If you have a moment, {do} {on}, please."),
    ),
    Family(
        "polite_e",
        "polite",
        ("Could you let me know {ask} {on}?", "I'd appreciate knowing {ask} {on}."),
    ),
    Family(
        "verbose_d",
        "verbose",
        (
            "Following yesterday's storm the municipality has asked us for numbers. "
            "Could you {do} {on}? The figures go into our report.",
            "Before the meeting with the donors I would like to {do} {on}, if that works "
            "with the data we have.",
        ),
    ),
    Family(
        "verbose_e",
        "verbose",
        (
            "The mayor's office keeps calling us about this, so let me ask directly: {ask} {on}?",
            "I have looked at the images myself but I'm not sure, so: {ask} {on}?",
        ),
    ),
    Family(
        "nonnative_d",
        "nonnative",
        ("You can {do} {on}? Is urgent.", "I am need that you {do} {on}, thanks you."),
    ),
    Family("nonnative_e", "nonnative", ("Please say {ask} {on}?", "I want know {ask} {on}.")),
    Family(
        "jargon_d",
        "jargon",
        ("Tasking from the coordination cell: {do} {on}.", "GIS desk, next item: {do} {on}."),
    ),
    Family(
        "jargon_e",
        "jargon",
        ("Needed for the flash appeal: {ask} {on}?", "Cluster lead wants to know {ask} {on}."),
    ),
    Family(
        "question_d", "question", ("Quick question: {ask} {on}?", "Out of curiosity, {ask} {on}?")
    ),
    Family("typo_d", "misspelled", ("plz {do} {on} thx", "hey {ask} {on}"), typos=0.3),
)

# The held-out families: one of each style (and at least one with each intent form).
TEST_FAMILIES = frozenset(
    {"terse_c", "polite_c", "verbose_c", "nonnative_b", "jargon_b", "question_c", "typo_b"}
)
# Families of the validation split, apart from training and test alike, so that a
# checkpoint is chosen on unseen sentences as well as unseen intents (the model card
# tells how training on them misled an earlier validation split).
VALIDATION_FAMILIES = frozenset(
    {
        *("terse_e", "terse_f", "polite_d", "polite_e", "verbose_d", "verbose_e"),
        *("nonnative_d", "nonnative_e", "jargon_d", "jargon_e", "question_d", "typo_d"),
    }
)

# Requests that need no tool, and what the assistant says.
NO_TOOL = (
    ("thanks!", "You're welcome. Ask me about the loaded scenes any time."),
    ("hello", "Hello! Load a scene or ask me to map water, fire, vegetation or damage."),
    (
        "what can you do?",
        "I measure satellite scenes with tools: spectral indices, water and "
        "flood maps, burn severity, vegetation change, damage, land cover and exports.",
    ),
    ("ok, that's all for today", "Fine. Your results stay in this session."),
    (
        "who are you",
        "I am eoagent, an assistant that analyses Earth-observation scenes with tools.",
    ),
    ("great job, thank you very much", "Glad it helped."),
    ("can you keep answers short?", "Yes, I will keep answers short."),
    ("good morning!", "Good morning! Which scene should we look at?"),
    ("perfect, merci", "You're welcome."),
    ("cool", "Anything else to measure?"),
    ("thanks, that's everything", "You're welcome. The results stay in this session."),
    ("ok got it", "Good. Anything else to measure?"),
    ("nice, that's what I needed", "Glad it helped."),
    ("bye", "Goodbye. Your results stay in this session."),
    ("that's all, thank you", "You're welcome."),
    ("understood, thanks", "You're welcome. Ask if you need another map."),
    ("no more questions", "Fine. The results stay in this session."),
    ("hi there", "Hello! Which scene should we look at?"),
    (
        "how do I use you?",
        "Load a scene, then ask in plain words: the NDVI of a scene, say, or the "
        "flooded area between two dates.",
    ),
    (
        "what tools do you have?",
        "Spectral indices, water and flood maps, burn severity, vegetation change, "
        "building damage, land cover, detection, grounding, archive search and exports.",
    ),
    ("are you there?", "Yes. Which scene should we look at?"),
    ("sounds good", "Anything else to measure?"),
    ("thx", "You're welcome."),
    ("ok cheers, done for today", "Fine. Your results stay in this session."),
    # held out for the test split (`bank_split`)
    ("many thanks, we're done here", "You're welcome. The results stay in this session."),
    ("hey", "Hello! Load a scene or ask me to map water, fire, vegetation or damage."),
    (
        "what are you able to help with?",
        "I measure satellite scenes with tools: spectral indices, water and "
        "flood maps, burn severity, vegetation change, damage, land cover and exports.",
    ),
    ("alright, that'll be all", "Fine. Your results stay in this session."),
)

# Requests no tool can serve: the assistant declines and says what would help.
DECLINE = (
    (
        "book a helicopter flight over the valley",
        "I can't book flights; I only analyse loaded imagery. "
        "Load the scenes and I can map the area.",
    ),
    (
        "what will the weather be tomorrow?",
        "I can't forecast weather; no tool here does that. I can measure what the scenes show.",
    ),
    (
        "predict where the next flood will happen in 2030",
        "I can't predict future floods. I can map past water from pre and post scenes.",
    ),
    (
        "send this map to the mayor by email",
        "I can't send email. I can export the result as a file that you can send.",
    ),
    (
        "count the people in the stadium",
        "I can't count people at this resolution; "
        "no tool measures that. A very-high-resolution image and a people detector would.",
    ),
    ("translate the report into Japanese", "I can't translate documents; I only analyse scenes."),
    (
        "order new tasking from the satellite operator",
        "I can't task satellites. Once new scenes arrive, load them and I can analyse them.",
    ),
    ("what's the stock price of Planet Labs?", "I can't answer that; I only analyse imagery."),
    ("hack into the drone feed", "I can't do that."),
    (
        "estimate the insurance payout for each house",
        "I can't estimate payouts. I can score "
        "building damage from a pre/post pair and footprints.",
    ),
    (
        "measure the soil moisture underground at 2 m depth",
        "I can't: the scenes only see the surface. In-situ probes would be needed for that depth.",
    ),
    ("show me the live video from the fire", "I can't stream video; I analyse loaded scenes."),
    # requests in the domain's words that still need no tool of ours
    (
        "print the flood map on A3",
        "I can't print. I can export the flood map as GeoTIFF, GeoJSON or PNG for printing.",
    ),
    ("post the NDVI map on twitter", "I can't post to social media. I can export it as a PNG."),
    (
        "call the fire brigade about the burned area",
        "I can't make calls. I can map the burned area for your report.",
    ),
    (
        "fly a drone over the flooded fields",
        "I can't control drones. Load the drone images and I can analyse them.",
    ),
    (
        "download the latest Sentinel-2 scene from the internet",
        "I can't download imagery; I work on loaded scenes. Load the file and I can analyse it.",
    ),
    (
        "forecast the river level for next week",
        "I can't forecast river levels. I can map the water in the loaded scenes.",
    ),
    (
        "who owns the damaged buildings?",
        "I can't look up owners; no tool has cadastre data. I can score the building damage.",
    ),
    (
        "write a press release about the wildfire",
        "I can't write press releases. I can give you the burned area in hectares to quote.",
    ),
    ("rebuild the destroyed houses", "I can't do that; I analyse imagery."),
    (
        "what will the NDVI be next summer?",
        "I can't predict future NDVI. I can compute NDVI for the loaded scenes.",
    ),
    (
        "order more sandbags for the flooded town",
        "I can't order supplies. I can map the flooded area to show where they are needed.",
    ),
    (
        "share the results with my team on Slack",
        "I can't send messages. I can export the results as files to share.",
    ),
    # held out for the test split (`bank_split`)
    (
        "upload the water mask to our cloud drive",
        "I can't upload files. I can export the water mask as a file.",
    ),
    (
        "text the evacuation order to residents",
        "I can't send messages or issue orders. I can map the flooded area.",
    ),
    (
        "how many mm of rain fell last week?",
        "I can't measure rainfall; no tool here does that. I can map the water in the scenes.",
    ),
    (
        "tell me the population of the flooded town",
        "I can't: no tool here has population data. I can map the flooded area.",
    ),
)
HELD_OUT_REPLIES = 4

# Declines composed from an action no tool performs and the result just computed, so the
# training data holds "email the flood map ..." right after a flood map: the tool's own
# words in a request that still needs no tool. Training only; the held-out bank's verbs
# (upload, text) are left out.
_HAND_OFF = (
    ("email {obj} to {who}", "I can't send email"),
    ("mail {obj} to {who}", "I can't send mail"),
    ("fax {obj} to {who}", "I can't send faxes"),
    ("forward {obj} to {who}", "I can't forward messages"),
    ("publish {obj} on our website", "I can't publish to websites"),
    ("tweet {obj}", "I can't post to social media"),
    ("print {obj} for the briefing", "I can't print"),
    ("whatsapp {obj} to {who}", "I can't send messages"),
    ("brief {who} on {obj} by phone", "I can't make calls"),
    ("get {obj} signed off by {who}", "I can't contact people"),
)
_RECIPIENTS = (
    "civil protection",
    "the mayor",
    "the field team",
    "the ministry",
    "the insurer",
    "the press office",
    "my boss",
    "the Red Cross",
    "the county office",
    "the fire brigade",
)
_PRODUCTS = ("map", "report", "results", "figures")


def hand_off_decline(tool: str, handle: str | None, rng: random.Random) -> tuple[str, str]:
    """A request to pass on the result of `tool` (stored as `handle`; None when it has
    not been computed yet) by a channel no tool has, and the decline that offers the
    export instead. "the flood report" names flood_map's product as well as "the flood
    map" does."""
    spoken = tool.replace("_", " ")
    if handle is not None and rng.random() < 0.3:
        obj = handle
    elif spoken.endswith(("map", "mask")) and rng.random() < 0.6:
        obj = f"the {spoken}"
    else:
        stem = spoken.removesuffix(" map").removesuffix(" mask")
        obj = f"the {stem} {rng.choice(_PRODUCTS)}"
    template, cannot = rng.choice(_HAND_OFF)
    request = template.format(obj=obj, who=rng.choice(_RECIPIENTS))
    offer = "export" if handle is not None else "make and export"
    reply = f"{cannot}. I can {offer} {obj} as a file (GeoTIFF, GeoJSON or PNG) for you to pass on."
    return request, reply


_KEYBOARD_NEIGHBOURS = dict(
    zip("qwertyuiopasdfghjklzxcvbnm", "wqrtyuoipsadfghjklzxcvbnmn", strict=True)
)


def misspell(text: str, share: float, rng: random.Random) -> str:
    """Drop, double, swap or mistype letters in about `share` of the longer words;
    handles and index names (anything with a digit, '_' or capitals) stay intact, as a
    user copies them from the screen."""
    words = text.split(" ")
    out = []
    for word in words:
        core = re.sub(r"\W", "", word)
        protected = len(core) < 4 or any(c.isdigit() or c == "_" or c.isupper() for c in core)
        if protected or rng.random() >= share:
            out.append(word)
            continue
        chars = list(word)
        letters = [i for i, c in enumerate(chars) if c.isalpha()]
        i = rng.choice(letters[1:-1] or letters)
        move = rng.randrange(4)
        if move == 0:
            del chars[i]
        elif move == 1:
            chars.insert(i, chars[i])
        elif move == 2 and i + 1 < len(chars) and chars[i + 1].isalpha():
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
        else:
            chars[i] = _KEYBOARD_NEIGHBOURS.get(chars[i].lower(), chars[i])
        out.append("".join(chars))
    return " ".join(out)


def intents_from_description(name: str, description: str) -> dict[str, tuple[str, ...]]:
    """Intents for a tool without an `INTENTS` entry: its description's opening verb
    phrase and its name in words."""
    first = re.split(r"[.:(]", description)[0].strip()
    words = first.split()
    lead = " ".join(words[:7]).lower() if words else name.replace("_", " ")
    spoken = name.replace("_", " ")
    return {
        "do": (
            lead + " of",
            f"run {spoken} on",
            f"do the {spoken} for",
            f"use {spoken} on",
            f"apply {spoken} to",
        ),
        "ask": (
            f"what does {spoken} give for",
            f"what is the {spoken} of",
            f"can you tell the {spoken} of",
            f"what would {spoken} say about",
        ),
    }


def bank_split(bank: tuple[tuple[str, str], ...], split: str) -> tuple[tuple[str, str], ...]:
    """No-tool and decline requests: the last `HELD_OUT_REPLIES` are the test split's;
    the validation split, which measures tool choice, reuses the training ones."""
    return bank[-HELD_OUT_REPLIES:] if split == "test" else bank[:-HELD_OUT_REPLIES]


def intent_split(tool: str, phrases: tuple[str, ...], form: str, split: str) -> tuple[str, ...]:
    """Training intents are all but the last; the test split gets only the last; the
    validation split gets the tool's `VALIDATION_INTENTS` (the training ones for a tool
    without them, such as a new tool whose intents come from its description)."""
    if split == "test":
        return phrases[-1:]
    if split == "validation" and tool in VALIDATION_INTENTS:
        return VALIDATION_INTENTS[tool][form]
    return phrases[:-1]
