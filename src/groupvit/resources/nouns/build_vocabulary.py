"""Maintainer tool: rebuild ``nouns.txt`` and ``irregular_plurals.tsv`` in this folder.

Not imported at run time (the package only reads the generated text files). Rebuilding needs two things that are
*not* dependencies of ``groupvit``:

* the WordNet 3.0 database files (Debian/Ubuntu: ``apt-get install wordnet-base`` puts them in
  ``/usr/share/wordnet``), and
* the ``wordfreq`` package (``pip install wordfreq``), used only to rank words by how common they are.

Selection (see :func:`main`):

1. Every curated entry below (PASCAL VOC, PASCAL Context, COCO things and stuff, ADE20K, a list of common
   ImageNet-style objects and scene words, and the synthetic preset category names) is always kept.
2. From WordNet, single-word lower-case noun lemmas are kept when (a) their ``wordfreq`` Zipf frequency is at least
   ``--min-zipf``, (b) one of their first three noun senses is in a concrete lexicographer file (animal, artifact,
   body, food, object, plant, substance; see ``CONCRETE_LEXFILES``) written in lower case (so proper names are
   dropped), and (c) the SemCor sense counts in ``cntlist.rev`` do not say the word is mostly used in an abstract
   noun sense or as a verb/adjective/adverb.
3. Function words, colour adjectives, position words (top, left, side...) and caption "meta" words (photo, image,
   picture, background...) are removed.

``irregular_plurals.tsv`` keeps the WordNet ``noun.exc`` entries whose base form is in the vocabulary.

Usage::

    python build_vocabulary.py --wordnet-dir /usr/share/wordnet --min-zipf 2.5
"""

from __future__ import annotations

import argparse
import logging
import re
from collections import defaultdict
from pathlib import Path

logger = logging.getLogger("build_vocabulary")

HERE = Path(__file__).resolve().parent

# WordNet lexicographer files of concrete noun categories, with the minimum wordfreq Zipf frequency for a word whose
# concrete sense is in that file (body and substance words need to be more common: rare ones are anatomy and
# chemistry). People (noun.person) and places (noun.location) come only from the curated lists below: in WordNet they
# are dominated by roles, titles and administrative areas that are not visual categories.
CONCRETE_LEXFILES = {
    5: ("noun.animal", 0.0),
    6: ("noun.artifact", 0.0),
    8: ("noun.body", 3.6),
    13: ("noun.food", 0.0),
    17: ("noun.object", 0.0),
    20: ("noun.plant", 0.0),
    27: ("noun.substance", 3.6),
}

PASCAL_VOC = """aeroplane airplane bicycle bird boat bottle bus car cat chair cow dining_table dog horse motorbike
person potted_plant sheep sofa train tv_monitor"""

PASCAL_CONTEXT = """aeroplane bag bed bedclothes bench bicycle bird boat book bottle building bus cabinet car cat
ceiling chair cloth computer cow cup curtain dog door fence floor flower food grass ground horse keyboard light
motorbike mountain mouse person plate platform potted_plant road rock sheep shelves shelf sidewalk sign sky snow
sofa table track train tree truck tv_monitor wall water window wood"""

COCO_THINGS = """person bicycle car motorcycle airplane bus train truck boat traffic_light fire_hydrant stop_sign
parking_meter bench bird cat dog horse sheep cow elephant bear zebra giraffe backpack umbrella handbag tie suitcase
frisbee skis ski snowboard sports_ball kite baseball_bat baseball_glove skateboard surfboard tennis_racket bottle
wine_glass cup fork knife spoon bowl banana apple sandwich orange broccoli carrot hot_dog pizza donut doughnut cake
chair couch potted_plant bed dining_table toilet tv television laptop mouse remote keyboard cell_phone mobile_phone
microwave oven toaster sink refrigerator fridge book clock vase scissors teddy_bear hair_drier hair_dryer toothbrush"""

COCO_STUFF = """banner blanket branch bridge building bush cabinet cage cardboard carpet ceiling cloth clothes cloud
counter cupboard curtain desk dirt door fence floor flower fog food fruit furniture grass gravel ground hill house
leaf light mat metal mirror moss mountain mud napkin net paper pavement pillow plant plastic platform playing_field
railing railroad river road rock roof rug salad sand sea shelf sky skyscraper snow stairs stone straw table tent
textile towel tree vegetable wall water window wood"""

ADE20K = """wall building sky floor tree ceiling road bed windowpane grass cabinet sidewalk person earth door table
mountain plant curtain chair car water painting sofa shelf house sea mirror rug field armchair seat fence desk rock
wardrobe lamp bathtub railing cushion box column signboard chest_of_drawers counter sand sink skyscraper
fireplace refrigerator grandstand path stairs runway pool_table pillow screen_door stairway river bridge
bookcase coffee_table toilet flower book hill bench countertop stove palm kitchen_island computer swivel_chair
boat bar arcade_machine hovel bus towel light truck tower chandelier awning streetlight booth television_receiver
airplane dirt_track apparel pole land bannister escalator ottoman bottle buffet poster stage van ship fountain
conveyer_belt canopy washer plaything swimming_pool stool barrel basket waterfall tent bag minibike cradle oven ball
food step tank microwave pot animal bicycle lake dishwasher screen blanket sculpture hood sconce vase
traffic_light tray ashcan fan pier crt_screen plate monitor bulletin_board shower radiator glass clock flag"""

SYNTHETIC = """circle square triangle cross star diamond heart sun leaf brick ball fish flower tree mushroom"""

# Common photographable objects, animals, food, clothing, vehicles and scene words (ImageNet-style, lower case).
COMMON_OBJECTS = """
accordion acorn airport alarm_clock alligator almond ambulance anchor ant antelope apartment apron aquarium arch
armadillo armor arrow artichoke asparagus astronaut avocado axe baby backyard bacon badger bagel baguette bakery
balcony ballerina balloon bamboo bandage banjo bank barbecue barn baseball basketball bat bathroom bathtub beach
bead beak beam bean beard bedroom bee beef beer beetle bell belt berry bib bicycle_helmet bike bikini billboard
binoculars birdhouse biscuit bison blender blossom blouse blueberry boar boardwalk bonfire bookshelf boot bouquet
bow bowtie boxer bracelet brain bread breakfast brick_wall bride bridegroom broom bubble bucket buffalo bulldozer
bun bunny burger burrito butter butterfly button cabbage cactus cafe calculator calf camel camera campfire
can_opener candle candy cane canoe cap car_seat cardigan cargo carousel carriage cart carton castle caterpillar
cathedral cattle cauliflower cave celery cello cereal chain chair_lift chalk chalkboard champagne chandelier cheese
cheetah chef cherry chess chessboard chest chicken child chimney chimpanzee chip chocolate church cigarette city
cliff cloak closet clown coast coat cobra cockroach coconut coffee coffee_mug coin colander comb compass
computer_mouse cone container cookie cooler coral corn costume cottage cotton couch cowboy crab cracker crane crayon
crib cricket crocodile croissant crow crowd crown crutch cucumber cupcake cushion cyclist daisy dam dancer deer
desert dessert diaper dice dinosaur dish dock doctor doll dollar dolphin donkey doorway dove dragon dragonfly drawer
dress drill drink drum duck dumpling eagle ear earring egg eggplant elevator envelope eraser eye fabric face factory
falcon farm farmer faucet feather fern ferry field finger fire fire_truck firefighter fireworks fisherman
fishing_rod flamingo flashlight flip_flops flute fly foal football forest fountain fox frog frosting garage garden
garlic gate gazelle gecko ghost gift girl glacier glove goat goggles goldfish golf_ball golf_club goose gorilla gown
grape grapefruit grasshopper greenhouse grill guitar gull gun hallway ham hamburger hammer hammock hamster hand
harbor harmonica harp hat hawk hay headphones hedge hedgehog helicopter helmet hen highway hippo hippopotamus honey
hoodie hook horn hose hospital hotel hummingbird hut iceberg ice_cream igloo iguana island jacket jaguar jam jar
jeans jeep jellyfish jersey jewelry jigsaw_puzzle kangaroo kayak kettle key kid kitchen kitten kiwi koala ladder
ladybug lake lamb lantern lawn lawnmower leash lemon leopard lettuce library lighthouse lily lime limousine lion
lizard llama lobster lock locomotive log lollipop luggage magazine mailbox mango map maple marker market mask meadow
meat medal melon microphone milk minivan mitten monkey moon moose mop mosque mosquito moth motorboat mug muffin
mushroom nail necklace nest newspaper notebook nurse nut oak oar octopus olive onion orchard orchid ostrich otter
owl ox paddle paint paintbrush palace palm_tree pan panda pancake pants parachute parrot pasta path peach peacock
peanut pear pebble pelican pen pencil penguin pepper piano pickup_truck picnic pie pier pig pigeon pineapple pipe
pitcher plane playground plum pole police_officer pond pony popcorn porch post potato pottery puddle pumpkin puppy
purse quilt rabbit raccoon radio raft rail rainbow raincoat rake raspberry rat ravioli razor receipt refrigerator
reptile restaurant rhino rhinoceros ribbon rice rider rifle ring robe robot rocket rooster rope rose ruler sail
sailboat sailor salmon sandal satellite sauce saucer sausage saw saxophone scarf school scooter scorpion screwdriver
seagull seal seashell shark shed shell ship shirt shoe shop shorts shovel shrimp shrub singer skate skater skeleton
skier skirt skull skunk sled sleeping_bag slide slipper snail snake sneaker snowman soap soccer_ball sock soldier
soup spaghetti spider spinach sponge squirrel stadium stapler starfish statue steak steering_wheel stick stocking
stomach stool stove strawberry street stroller student submarine subway suit sunflower sunglasses supermarket surfer
sushi swan sweater swimmer swing sword syringe t-shirt taco tank teacher teapot telephone telescope temple
tennis_ball tiger tile tire toad toast toddler tomato tongue tool toothpaste torch tortoise toucan tower toy tractor
traffic_cone trailer train_station tram trampoline trash_can tricycle tripod trolley trophy trumpet tulip tuna
tunnel turkey turtle tv tweezers typewriter umbrella unicycle uniform vacuum_cleaner valley vehicle vest violin
volcano vulture waffle wagon waiter walkway wallet walrus warehouse washing_machine wasp watch waterfall watermelon
wave whale wheat wheel wheelchair whistle wig windmill wine wing wolf woman worm wrench yacht yard yogurt zoo man
boy lady gentleman player team crowd clothing wedding pudding sweater beach_umbrella sunset sunrise rain storm
lightning smoke flame ice fog mist cloud snowflake ocean lake pond river stream creek waterfall canyon dune island
shore coast harbor jungle forest woods valley hill cliff mountain volcano sky star moon planet park street city town
village countryside farm field garden yard lawn meadow playground parking_lot bridge road highway alley sidewalk
crosswalk tunnel railway station airport harbor dock office classroom living_room dining_room bathroom bedroom
kitchen hallway staircase attic basement balcony rooftop
"""

# People as they appear in image captions (roles that are visible: age/gender, family, occupations in uniform,
# sports and performers).
PEOPLE = """
person man woman boy girl child kid baby toddler infant teenager teen adult gentleman lady guy dude youngster family
mother father mom dad mum daddy mommy parent son daughter brother sister husband wife grandmother grandfather
grandma grandpa grandchild uncle aunt cousin bride groom bridegroom bridesmaid couple friend girlfriend boyfriend
crowd team audience group_of_people passenger pedestrian tourist traveler traveller hiker camper climber player
athlete runner jogger cyclist biker rider skier snowboarder skater skateboarder surfer swimmer diver sailor golfer
tennis_player baseball_player football_player soccer_player basketball_player batter pitcher catcher goalkeeper
goalie referee umpire jockey boxer wrestler gymnast dancer ballerina singer musician guitarist drummer pianist
violinist drummer performer actor actress model clown magician juggler artist painter sculptor photographer
cameraman chef cook baker butcher waiter waitress bartender barista farmer fisherman gardener shepherd cowboy
cowgirl doctor nurse surgeon dentist paramedic firefighter fireman police_officer policeman policewoman cop officer
soldier pilot astronaut sailor captain guard security_guard worker construction_worker builder carpenter plumber
electrician mechanic driver bus_driver taxi_driver truck_driver cashier shopkeeper vendor merchant teacher student
pupil schoolboy schoolgirl professor scientist engineer doctor priest monk nun knight king queen prince princess
businessman businesswoman vendor beggar homeless_person spectator fan bather sunbather beachgoer shopper customer
"""

# Places and scene regions commonly named in captions.
PLACES = """
beach shore coast coastline seaside island ocean sea lake pond river stream creek waterfall canyon valley hill
mountain mountainside hillside cliff volcano glacier desert dune forest woods woodland jungle meadow field prairie
grassland farmland pasture orchard vineyard garden backyard yard lawn park playground zoo farm ranch countryside
city town village downtown suburb neighborhood neighbourhood street road highway freeway alley avenue boulevard
sidewalk crosswalk intersection roundabout bridge tunnel parking_lot parking_garage railway railroad train_station
station airport runway harbor harbour port marina dock pier wharf market marketplace plaza square courtyard skyline
rooftop balcony porch patio terrace garage basement attic hallway corridor staircase stairway lobby office classroom
library museum gallery restaurant cafe bar pub kitchen bathroom bedroom living_room dining_room restroom church
cathedral chapel mosque temple synagogue castle palace tower lighthouse windmill barn stable stadium arena gym court
tennis_court basketball_court golf_course racetrack pool swimming_pool campsite campground
"""

# Words never to include even if WordNet / the curated lists would (function words, colours, positions, meta words).
EXCLUDE = """
a an the this that these those it its i me my mine we us our you your he him his she her they them their one ones
some any all each every both either neither no none nothing something anything everything someone anyone everyone
nobody somebody anybody who whom whose which what where when why how there here than then so such very too also just
only even not and or but nor if because as at by for from in into of off on onto out over under up down with without
about above across after against along among around before behind below beneath beside between beyond during inside
outside near through throughout toward towards upon within is am are was were be been being do does did done have
has had having can could will would shall should may might must ought let lets get got go goes went gone make made
take took see saw seen say said use used way lot lots kind sort type part parts piece bit thing things stuff deal
number amount group set pair couple bunch variety range series example side top bottom front back left right middle
center centre end edge inside outside interior exterior surface foreground background view photo photos photograph
photography picture pictures pic image images snapshot shot close-up closeup illustration drawing sketch cartoon
clipart clip art vector stock stock_photo royalty icon logo symbol design pattern style template concept version
copy sample model mockup render rendering screenshot frame detail details texture color colour shade red green blue
yellow white black grey gray pink purple brown violet beige tan navy maroon teal cyan magenta dark bright new old
good bad best big small large little tall short long high low full first second third last next other another same
different many much more most less few several own sure hand-drawn isolated beautiful pretty cute nice lovely young
happy funny sexy hot cool modern vintage retro classic abstract seamless time times day days year years today
tomorrow yesterday night morning evening afternoon week month moment while minute hour age life love help work home
fun idea place area spot location point line space thanks thank please yes okay ok hello hi sir mr mrs ms
"""

# WordNet nouns that pass the automatic filters but are abstract, not visual, ambiguous with other parts of speech,
# first names, offensive, or otherwise poor prompts for a segmentation class (reviewed by hand, most frequent first).
REVIEWED_OUT = """
world state system shit works site position source felt step access addition region section product material
direction master solution structure target agent soul remains christ spirit till helping host housing setting fellow
criminal youth core links quarter zone dick ben max sub chosen serving assembly humans spoke facility territory
universe heaven load representative transportation consumer origin tip client empire trend recording facing hanging
accused infrastructure covering output horror architecture layer landing string citizen idiot genius representation
innovation domain footage stocks requirement segment stays upgrade creator filling mixture suspension installation
casting medication portfolio heights provisions interface counsel murphy brad rookie haven delta dive ace babe
import loading polls provider sang setup freak hub clearing harper marc sierra shook cum hack invention junk mercury
premises starter superman upside affiliate asylum successor archive dale defendant gig prey nominee pee ref
reservation col eats herald homeland lance modeling necessity nova champ dope griffin heir midst rogue cunt glen
heather molly marshal kirk donna calif freeman reset bot morocco vicinity belle madame darling bastard whore pussy
penis vagina sperm urine piss asshole ass crap fool liar loser villain terrorist killer murderer slave virgin china
japan trump jean mac duke earl cole victor chuck bobby billy jimmy costa khan batman anime android server web user
internet virus gene protein carbon oxygen hydrogen sodium calcium ion electron enzyme hormone insulin dioxide
uranium acid particle bacteria membrane plasma fluid dose vaccine cocaine heroin marijuana cannabis drug mate rep
prof doc vet pal lad dame voter taxpayer predecessor stole dug falls greens sights colors colours lap gap loop strip
cure diet breath sweat leak receiver lighter packing grinding dressing lining covering commodity upside mainland
orbit boundary border venue workplace transit route outlet portal browser gig soundtrack masterpiece destination
hometown province county district township borough commonwealth kingdom continent refuge sanctuary reservation
habitat user client consumer employer partner member official candidate opponent specialist expert consultant
analyst coordinator administrator supervisor superintendent investigator scholar economist historian developer
provider supplier contractor publisher editor producer maker holder buyer seller broker merchant collector observer
recipient donor companion colleague buddy supporter volunteer activist resident immigrant stranger refugee victim
survivor hostage hero champion superstar idol god lord prophet saint goddess lover character figure post cell target
joint gas alcohol auto reader arsenal rebel poison derby drone admiral prosecutor mentor treasurer baron
correspondent blogger composer undergraduate exile narrator psychologist archbishop director chairman lawyer
attorney senator governor president minister deputy commissioner ambassador mayor republican democrat liberal
radical communist feminist lesbian racist nazi spy carrier scrap striker gateway tee gut keeper shades telegraph
drug fuel youth lance junk cord mike stopping spirits quarters fraction overlapping vibes stigma fallout override
overload seizing everlasting trivia calculus preventive preventative corrective requisite reversible commemorative
hypnotic flamboyant dainty bittersweet cordial palliative hepatic equatorial chilly brittle subsection repository
standby constituent discard clegg kylie veronica erica milo clarence toby brent kris kat cassie liza tammy gemma
britt marge mack hank bennet dobson ridley rudd fitch coulter pollard slater silva garner springer nickelodeon cisco
napa mei das ani aba dak pia hoy sens dun ness tor rue sup tam takin tung dahl daw haw joss merle lees coney bethel
marguerite ling hind stub seam sham tinder tore tract ware digs workings trapping gearing milling sacking bagging
hoarding taping edging scraping coping overlay remake receptor catalyst transplant flats prop das hash cache meth
condom dildo vibrator douche bosom fetus womb placenta testosterone spawn bling booze poop puke nuke ammo camo veg
telly woof goody whatnot downer hookup contraband counterfeit forgery scourge throughput duplication improvisation
modernism humankind nourishment consignment catchment sampler analyzer snippet schematic requisite sectional adjunct
buffer cosy laguna stifle savory bubbly dynamo magneto antimicrobial contraceptive penicillin salmonella pathogen
bacterium antibiotic anesthetic narcotic opium morphine aspirin placebo iodine cholesterol glucose serum
testosterone fructose cortisol progesterone sulfate oxide phosphate neutron proton photon quark atom molecule
polymer substrate catalyst nitrogen alloy resin algae fungus spore gluten yeast caffeine nucleus embryo vein artery
bladder kidney liver lung organ tissue nerve muscle flesh cavity lobe diaphragm womb snug brill grub dorm loo ascot
fob nib jag pes shiv gilt crypt hind mince poon weenie reefer followup brainchild ramona dingle cuddy getup
outpouring pullback kitsch
"""

# Plural-only or plural-meaning nouns that stay lemmas of their own (not mapped to the singular).
KEEP_PLURAL = {
    "glasses",
    "spectacles",
    "clothes",
    "pants",
    "jeans",
    "shorts",
    "scissors",
    "binoculars",
    "headphones",
    "stairs",
    "goggles",
    "tights",
    "pajamas",
    "sunglasses",
    "trousers",
    "shelves",
    "skis",
}

# Colour names that are also nouns but should not be treated as object nouns on their own.
COLOUR_WORDS = """red green blue yellow white black grey gray pink purple brown violet beige navy maroon teal cyan
magenta turquoise ivory crimson scarlet azure indigo lavender"""


def _entries(text: str) -> set[str]:
    """Parse a curated block: whitespace-separated entries, ``_`` joins the words of a multi-word entry."""
    return {e.replace("_", " ").lower() for e in text.split()}


def _read_lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="latin-1").splitlines() if not line.startswith("  ")]


def load_wordnet(wn_dir: Path) -> tuple[dict[str, list[int]], dict[int, tuple[int, set[str]]], dict[str, set[str]]]:
    """Return (noun lemma -> synset offsets in sense order, offset -> (lexfile, surface words), other POS lemmas)."""
    index: dict[str, list[int]] = {}
    for line in _read_lines(wn_dir / "index.noun"):
        parts = line.split()
        lemma, p_cnt = parts[0], int(parts[3])
        offsets = [int(x) for x in parts[4 + p_cnt + 2 :]]
        index[lemma] = offsets
    synsets: dict[int, tuple[int, set[str]]] = {}
    for line in _read_lines(wn_dir / "data.noun"):
        parts = line.split(" | ")[0].split()
        offset, lexfile, w_cnt = int(parts[0]), int(parts[1]), int(parts[3], 16)
        words = {re.sub(r"\(.*\)$", "", parts[4 + 2 * i]) for i in range(w_cnt)}
        synsets[offset] = (lexfile, words)
    others: dict[str, set[str]] = {}
    for pos in ("verb", "adj", "adv"):
        others[pos] = {line.split()[0] for line in _read_lines(wn_dir / f"index.{pos}")}
    return index, synsets, others


def _singular_candidates(word: str) -> list[str]:
    if not word.endswith("s") or word.endswith("ss"):
        return []
    out = [word[:-1]]
    if word.endswith("es"):
        out.append(word[:-2])
    if word.endswith("ies"):
        out.append(word[:-3] + "y")
    if word.endswith("ves"):
        out += [word[:-3] + "f", word[:-3] + "fe"]
    return out


def _is_concrete(synset: tuple[int, set[str]], lemma: str, zipf: float) -> bool:
    lexfile, words = synset
    return lexfile in CONCRETE_LEXFILES and lemma in words and zipf >= CONCRETE_LEXFILES[lexfile][1]


def load_sense_counts(wn_dir: Path) -> dict[str, dict[str, int]]:
    """SemCor tag counts per lemma: keys 'concrete', 'noun', 'other' (verb/adj/adv) and 'adj'."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: {"concrete": 0, "noun": 0, "other": 0, "adj": 0})
    for line in (wn_dir / "cntlist.rev").read_text(encoding="latin-1").splitlines():
        key, _, cnt = line.split()
        lemma, rest = key.split("%", 1)
        ss_type, lexfile = int(rest.split(":")[0]), int(rest.split(":")[1])
        n = int(cnt)
        if ss_type == 1:
            counts[lemma]["noun"] += n
            if lexfile in CONCRETE_LEXFILES:
                counts[lemma]["concrete"] += n
        else:
            counts[lemma]["other"] += n
            if ss_type in (3, 5):
                counts[lemma]["adj"] += n
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wordnet-dir", type=Path, default=Path("/usr/share/wordnet"))
    parser.add_argument("--min-zipf", type=float, default=2.5)
    parser.add_argument("--output-dir", type=Path, default=HERE)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from wordfreq import zipf_frequency

    curated: set[str] = set()
    for block in (
        PASCAL_VOC,
        PASCAL_CONTEXT,
        COCO_THINGS,
        COCO_STUFF,
        ADE20K,
        SYNTHETIC,
        COMMON_OBJECTS,
        PEOPLE,
        PLACES,
    ):
        curated |= _entries(block)
    exclude = _entries(EXCLUDE) | _entries(COLOUR_WORDS) | _entries(REVIEWED_OUT)
    curated -= exclude

    index, synsets, others = load_wordnet(args.wordnet_dir)
    counts = load_sense_counts(args.wordnet_dir)
    selected: set[str] = set()
    for lemma, offsets in index.items():
        if not re.fullmatch(r"[a-z]{3,}", lemma) or lemma in exclude:
            continue
        if lemma.endswith("ing") and any(v in others["verb"] for v in (lemma[:-3], lemma[:-3] + "e", lemma[:-4])):
            continue  # gerunds of verbs ("carving", "seating") read as verbs in captions
        zipf = zipf_frequency(lemma, "en")
        if zipf < (args.min_zipf if len(lemma) > 3 else max(args.min_zipf, 3.6)):
            continue
        # Concrete senses written in lower case (a capitalised surface form is a proper name, e.g. "John").
        concrete = [i for i, off in enumerate(offsets[:3]) if _is_concrete(synsets[off], lemma, zipf)]
        if not concrete:
            continue
        name_like = any(lemma not in synsets[off][1] for off in offsets)
        c = counts.get(lemma)
        if c is not None and c["noun"] + c["other"] >= 4:
            total = c["noun"] + c["other"]
            if c["concrete"] < 0.3 * total or c["adj"] > 0.3 * total:
                continue  # SemCor: mostly an abstract noun, or mostly a verb/adjective/adverb
        elif name_like or concrete[0] != 0:
            continue  # little evidence: the most frequent sense must be concrete and not also a proper name
        elif any(lemma in others[pos] for pos in ("adj", "adv")):
            continue  # no sense counts and also an adjective/adverb: too ambiguous
        selected.add(lemma)

    # Drop plural lemmas whose singular is also kept ("rooms" -> "room"): the extractor singularises.
    singulars = {w: _singular_candidates(w) for w in selected}
    selected = {w for w in selected if w in KEEP_PLURAL or not any(s in selected | curated for s in singulars[w])}
    vocab = sorted(selected | curated)

    header = [
        "# English concrete-noun vocabulary for groupvit.data.nouns (one lower-case lemma per line).",
        "# Generated by build_vocabulary.py from curated dataset class lists and WordNet 3.0 noun lemmas",
        f"# (concrete lexicographer files, wordfreq Zipf >= {args.min_zipf}). WordNet 3.0 Copyright 2006 by",
        "# Princeton University; see WORDNET_LICENSE.txt. Multi-word entries contain single spaces.",
    ]
    irregular: set[tuple[str, str]] = {("people", "person"), ("men", "man"), ("women", "woman"), ("children", "child")}
    for line in (args.wordnet_dir / "noun.exc").read_text(encoding="latin-1").splitlines():
        parts = line.split()
        if len(parts) >= 2 and "_" not in parts[0] and parts[0] != parts[1]:
            irregular.add((parts[0], parts[1]))
    vocab_set = set(vocab)
    irregular = {(p, s) for p, s in irregular if s in vocab_set and p not in KEEP_PLURAL}
    # Irregular plurals map to their singular ("teeth" -> "tooth") instead of being lemmas of their own.
    plurals = {p for p, _ in irregular}
    vocab = [w for w in vocab if w not in plurals]
    (args.output_dir / "nouns.txt").write_text("\n".join(header + vocab) + "\n", encoding="utf-8")
    irregular = sorted(irregular)
    logger.info("curated=%d wordnet=%d total=%d", len(curated), len(selected), len(vocab))
    lines = ["# plural<TAB>singular, from WordNet 3.0 noun.exc restricted to nouns.txt (see WORDNET_LICENSE.txt)"]
    lines += [f"{p}\t{s}" for p, s in irregular]
    (args.output_dir / "irregular_plurals.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    logger.info("irregular plurals: %d", len(irregular))


if __name__ == "__main__":
    main()
