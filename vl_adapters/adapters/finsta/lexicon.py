"""Closed word classes and a verb lexicon for the rule-based caption parser.

The parser has no part-of-speech tagger, so it tells nouns from verbs by position (the first word after a
determiner belongs to the noun phrase) and by this lexicon (a later word that is an inflected verb form ends
the noun phrase). `verb_base` undoes regular English inflection (-s, -es, -ies, -ing, -ed, doubled
consonants, dropped e) and a table of irregular forms.
"""

from __future__ import annotations

from functools import lru_cache

DETERMINERS = frozenset(
    """a an the this that these those some any each every another his her their its my your our both all many
    several few no one two three four five six seven eight nine ten""".split())
PRONOUNS = frozenset(
    """he she it they him them we you i me us someone somebody something anyone anybody everyone everybody
    nobody""".split())
AUXILIARIES = frozenset(
    "is are was were be been being am has have had does do did will can could would should may might 's".split())
WH_WORDS = frozenset("what who whom where how why which whose".split())
ORDER_WORDS = frozenset("first second third next finally later afterwards meanwhile also".split())
PREPOSITIONS = frozenset(
    """on in at under over above below behind near beside down up into onto from to across along through with
    toward towards around past inside outside by of for against among between about off without upon within
    like""".split())
# merged into one token before parsing: a multiword preposition is one relation
MULTIWORD = {("in", "front", "of"): "in front of", ("on", "top", "of"): "on top of", ("next", "to"): "next to",
             ("out", "of"): "out of", ("and", "then"): "and then", ("in", "between"): "in between"}
# "a group of people" -> people; "a video of a cat" -> cat: quantities and the medium are not scene objects
QUANTITY_NOUNS = frozenset(
    """group bunch couple crowd pair lot lots number herd flock pack swarm video clip footage montage
    compilation slideshow close-up closeup""".split())
PARTICLES = frozenset("left right up down out off away back around over in on along together forward backward".split())
ADVERBS = frozenset(
    """fast hard together again away back here there home outside inside upstairs downstairs around forward
    backward backwards well very too still just almost now then soon also alone""".split())
# -ly words that are not adverbs (nouns, or adjectives that sit before nouns)
NOT_ADVERBS = frozenset(
    """family fly butterfly dragonfly jelly belly lily rally ally reply supply italy holly bully dolly
    friendly lovely curly elderly lonely silly ugly early daily only holy jolly""".split())
ADJECTIVES = frozenset(
    """red blue green yellow orange purple pink black white gray grey brown golden silver dark light bright
    small big large tiny little huge tall short long young old new wooden metal plastic empty full open closed
    shiny round happy sad angry excited scared afraid tired surprised confused nervous upset calm hungry
    funny cute pretty beautiful ugly top bottom middle upper lower wet dry hot cold warm clean dirty busy
    quiet loud fat thin heavy strong weak high low far near slow quick ready sick asleep awake alive dead
    broken free real fake fresh""".split())
# phrasal verbs: after these verbs the particle belongs to the verb even when a noun phrase follows
PHRASAL = {
    "pick": {"up"}, "put": {"on", "down", "away", "up", "out", "back"}, "take": {"off", "out", "away", "up"},
    "turn": {"on", "off", "around", "up", "down"}, "try": {"on", "out"}, "set": {"up", "down"},
    "clean": {"up"}, "fill": {"up", "out"}, "wake": {"up"}, "give": {"up", "away", "back"},
    "throw": {"away", "out", "up"}, "switch": {"on", "off"}, "hold": {"up"}, "pull": {"out", "up", "over"},
    "cut": {"up", "off", "out"}, "chop": {"up"}, "blow": {"out", "up"}, "wipe": {"off", "down"},
    "write": {"down"}, "show": {"off"}, "look": {"up"}, "get": {"up", "off", "out", "on", "in"},
    "bring": {"out", "back", "up"}, "lift": {"up"}, "knock": {"down", "over"}, "zip": {"up"},
}
# Where a prepositional phrase after "verb object" attaches: placement and processing verbs put their object
# in a place ("pours milk *into* a bowl", "fries eggs *in* a pan"); caused-motion verbs send it along a path
# ("kicks the ball *into* the goal") while a locative phrase stays with the event ("pushes a cart *in* a shop").
PLACEMENT_VERBS = frozenset(
    """put place pour add drop insert spread apply fry cook boil bake grill roast mix stir chop slice cut dice
    fold hold hang stack load dip sprinkle wrap stuff lay set serve plant""".split())
PLACEMENT_PREPOSITIONS = frozenset("in into on onto over to inside".split())
MOTION_VERBS = frozenset("throw toss kick push pull drag carry roll pass hit shoot send bring move".split())
DIRECTIONAL_PREPOSITIONS = frozenset("into onto to toward towards".split())
# verbs that take another verb as complement: "tries to open", "starts screaming"
CATENATIVE = frozenset(
    """try start begin keep continue stop want need like love learn decide plan seem attempt teach show
    explain demonstrate""".split())
# temporal connectors between clauses: +1 the next clause's event comes later, -1 earlier, 0 at the same time
CONNECTORS = {"then": 1, "and then": 1, "before": 1, "after": -1, "while": 0, "as": 0, "when": 0,
              "once": -1, "until": 1, ",": 1}

VERBS = frozenset(
    """accept act add adjust aim answer appear apply argue arrange arrive ask attach attack attempt bake
    balance bark bathe bat battle beat become beg begin bend bet bike bite blend blink block blow board boil
    bounce bow bowl box brake break breathe bring brush build bump burn buy call calm camp carry carve
    cast catch celebrate change charge chase chat cheer chew chop circle clap clean clear climb close coach
    collect color colour comb come compare compete complain cook cool count cover crack crash crawl create
    cross crouch cry cuddle cut cycle dance dash deal decide decorate defend deliver demonstrate describe
    design dice die dig dip direct discover discuss dive do drag draw dress drift drink drip drive drop
    drum dry dunk dust eat enjoy enter escape examine exercise exit explain explode explore face fall feed
    feel fight fill film find finish fire fish fit fix flap flip float flow fly fold follow form fry gallop
    gather get give glide go grab greet grill grin grind grow growl hammer hand hang happen hate have head
    hear heat help hide hike hit hold hop hug hum hunt hurry introduce iron jog join joke jump keep kick
    kill kiss kneel knit knock know land laugh launch lay lead lean learn leave lick lie lift light like
    line listen load lock look lose love make march marry measure meet melt mix model mop mount move mow
    need nod note observe offer open operate order pack paddle paint pan park pass paste pat pause pay
    peel perform pet pick pinch place plant play point polish pop pose pour practice practise pray prepare
    present press pretend print protect pull pump punch push put race rain raise reach read record relax
    remove repair reply report rest reveal review ride ring rinse rip rise roar rock roll rotate row rub
    run rush sail say scoop score scratch scream scrub search see sell send serve set sew shake shape share
    shave shine shoot shop shout show shower shrug shut sing sink sip sit skate sketch ski skip slap sleep
    slice slide slip smell smile smoke snap sniff snow solve sort speak spill spin splash spray spread
    sprinkle squeeze stack stand stare start stay steer step stir stop stretch strike stroll struggle study
    stuff surf swallow sweep swim swing switch take talk tap taste teach tear tell test text thank think
    throw tickle tie toss touch tow trace train travel trim try tumble turn twist type unbox unwrap use
    vacuum visit wait wake walk want wash watch water wave wear weave weigh welcome whip whisk whisper
    whistle win wink wipe wish work worry wrap wrestle write yell zoom
    admire advertise agree allow announce applaud approach arrest assemble avoid beam believe blast boast borrow
    brew broadcast browse bury capture care check chill choke choose clamp click cling clip commentate compose
    concentrate connect construct control copy correct cough crush curl damage depart descend destroy develop
    dine disappear dismantle display dodge donate doze drain dream dribble drill drown dump earn edit embrace
    emerge empty encourage entertain erase exchange expand fade fail fasten fetch flash flex flick flirt flood
    flush force forget freeze frown gaze giggle glance glare glow glue graze grip groom guard guess guide
    handle harvest haul heal hover howl hurt ignore imitate improve inflate inspect install instruct interview
    invite juggle knead lecture lend limp live lounge lower manage mash massage mention mimic miss moan mumble
    munch narrate navigate nibble nudge obey organize overtake paddle parade peek perch persuade photograph
    pile pilot plunge poke pound pout praise prank preach produce promote pronounce propose provide prune
    pucker puff purr pursue quit rake rap react rebuild recite refill refuse rehearse release remember repeat
    replace rescue respond restore retrieve return rewind roast rub ruin sample save scan scare scatter scold
    scrape scribble seize separate settle shatter shiver shove shred shriek shuffle sigh simmer skid skim slam
    slurp smash smear snatch sneak sneeze snore snorkel snuggle soak sob sparkle spell spend spit split spoil
    sprint squat squeak squash squirt stab stagger startle steal stitch stomp stroke stumble suck suggest
    supervise support surround survive sway swear sweat swirl tackle tame tease thrash thump tiptoe topple
    tour transform transport trek trip trot tug tune tutor twirl undress unfold unload unlock unpack untie
    upload vanish wade waddle wag wander warm warn weld whine whirl wiggle wobble wonder wreck wriggle yank
    yawn""".split())
IRREGULAR = {
    "ran": "run", "sat": "sit", "ate": "eat", "eaten": "eat", "went": "go", "gone": "go", "came": "come",
    "took": "take", "taken": "take", "gave": "give", "given": "give", "made": "make", "got": "get",
    "gotten": "get", "saw": "see", "seen": "see", "drove": "drive", "driven": "drive", "rode": "ride",
    "ridden": "ride", "swam": "swim", "swum": "swim", "sang": "sing", "sung": "sing", "threw": "throw",
    "thrown": "throw", "caught": "catch", "fell": "fall", "fallen": "fall", "flew": "fly", "flown": "fly",
    "held": "hold", "stood": "stand", "spoke": "speak", "spoken": "speak", "wrote": "write",
    "written": "write", "drew": "draw", "drawn": "draw", "broke": "break", "broken": "break",
    "built": "build", "bought": "buy", "brought": "bring", "fought": "fight", "found": "find", "hid": "hide",
    "hidden": "hide", "hit": "hit", "hung": "hang", "kept": "keep", "knew": "know", "known": "know",
    "led": "lead", "lit": "light", "lost": "lose", "met": "meet", "paid": "pay",
    "put": "put", "read": "read", "rang": "ring", "said": "say", "sold": "sell",
    "sent": "send", "shook": "shake", "shot": "shoot", "shut": "shut", "slept": "sleep", "slid": "slide",
    "spun": "spin", "stole": "steal", "struck": "strike", "swept": "sweep", "swung": "swing",
    "taught": "teach", "tore": "tear", "torn": "tear", "told": "tell", "thought": "think", "woke": "wake",
    "wore": "wear", "worn": "wear", "won": "win", "dug": "dig", "fed": "feed", "felt": "feel",
    "began": "begin", "begun": "begin", "blew": "blow", "blown": "blow", "chose": "choose", "did": "do",
    "done": "do", "froze": "freeze", "grew": "grow", "grown": "grow", "heard": "hear", "bitten": "bite",
    "became": "become", "bent": "bend", "sank": "sink", "spilt": "spill",
}

@lru_cache(maxsize=65536)
def verb_form(word: str) -> tuple[str, str] | None:
    """(base, form) when `word` is a form of a known verb; form is "base", "s", "ing" or "ed"."""
    if word in IRREGULAR:
        return IRREGULAR[word], "ed"
    if word in VERBS:
        return word, "base"
    for suffix, form, stems in (
        ("ing", "ing", lambda s: (s, s + "e", s[:-1] if len(s) > 2 and s[-1] == s[-2] else None,
                                  s[:-1] + "ie" if s.endswith("y") else None)),
        ("ied", "ed", lambda s: (s + "y",)),
        ("ies", "s", lambda s: (s + "y",)),
        ("ed", "ed", lambda s: (s, s + "e", s[:-1] if len(s) > 2 and s[-1] == s[-2] else None)),
        ("es", "s", lambda s: (s, s + "e")),
        ("s", "s", lambda s: (s,)),
    ):
        if word.endswith(suffix) and len(word) > len(suffix) + 1:
            for stem in stems(word[: -len(suffix)]):
                if stem and stem in VERBS:
                    return stem, form
    return None


def is_adverb(word: str) -> bool:
    return word in ADVERBS or (word.endswith("ly") and len(word) > 3 and word not in NOT_ADVERBS
                               and verb_form(word) is None)  # "apply", "fly"


def is_plural(noun: str) -> bool:
    """A head noun that takes a plural verb ("men play", "people get off")."""
    irregular = {"men", "women", "people", "children", "kids", "police", "feet", "teeth", "mice", "geese", "fish"}
    return noun in irregular or (noun.endswith("s") and not noun.endswith(("ss", "us", "is")))

