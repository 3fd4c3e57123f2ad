"""Compose the bundled demo data (EPITOME-, EmpatheticDialogues-, DailyDialog- and PEC-format files).

Everything here is original text written for EmpRL; nothing is copied from the real datasets. The
output matches the official release formats so the same readers parse the real data and ours.

    python -m emprl.data.compose_demo --out src/emprl/demo_data

regenerates every file (and DATA_CARD.md) byte for byte: one seeded ``random.Random`` per part,
sorted iterations, no clocks. The text banks come first; the composition functions follow.

EPITOME pairs are of two kinds:
  * composed: a hand-written seeker situation (slot-filled) plus one fragment per mechanism at the
    chosen level (warmth for ER, understanding for IP, a question for EX) and optional neutral advice,
    in varied orders. Fragments are label-consistent: only EX fragments ask questions, only ER
    fragments carry warmth, and level-0 mechanisms contribute nothing.
  * hand-written: whole responses labelled by hand with inline tags, ``<er2>...</er2>`` marking the
    span that justifies an emotional-reactions level of 2 (the span becomes the rationale).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import random
import re
import tempfile
from collections import Counter
from pathlib import Path

SEED = 20250611
DEMO_DATA_DIR = Path(__file__).resolve().parents[1] / "demo_data"

# ==================================================================================================
# EPITOME: seeker situations
# Each situation: topic, valence ("neg" struggles, "pos" small wins), the post with {slots}, the
# event as a second-person gerund phrase (used by specific fragments), and adjectives that fit
# "feeling {feel}". A slot value that is a dict sets several slots at once.
# ==================================================================================================


def _sit(topic, post, event, feels, advice, mine=None, valence="neg", **slots):
    return {"topic": topic, "post": post, "event": event, "feels": feels, "advice": advice,
            "mine": mine or [], "valence": valence, "slots": slots}


SITUATIONS = [
    # work
    _sit("work", "Got laid off from the {place} today after {years} years. I keep refreshing job boards but I "
         "can't focus on anything.", "losing your job at the {place}", ["lost", "shaken", "adrift"],
         ["Update your resume tonight and send out a few applications, even ones that seem like a stretch.",
          "File for unemployment right away, the waiting period starts from the day you apply.",
          "Look into whether you're owed unused vacation pay."],
         place=["warehouse", "bakery", "call center", "print shop", "bank branch"], years=["three", "six", "eleven"]),
    _sit("work", "My manager yelled at me in front of the whole team over a {thing} and I had to go cry in the "
         "bathroom. I don't want to go back tomorrow.", "that scene in front of your team",
         ["humiliated", "embarrassed", "small"],
         ["Write down what happened today, with the time and who was there.",
          "HR should hear about a manager yelling at staff in public."],
         thing=["typo in a report", "late delivery", "scheduling mix-up"]),
    _sit("work", "I've been working {hours} hour weeks for months and I just feel empty. I come home, stare at "
         "the wall, and go to bed.", "months of {hours} hour weeks", ["burned out", "empty", "drained"],
         ["Check whether your company has an employee assistance program, they often cover a few free "
          "counseling sessions.", "Block one evening a week where work email stays closed."],
         hours=["60", "70", "65"]),
    _sit("work", "I got passed over for the promotion again. They gave it to someone who started {when} and I "
         "literally trained them.", "being passed over for the promotion", ["overlooked", "bitter", "undervalued"],
         ["Ask your manager for written feedback on what the next promotion would require.",
          "Start keeping a list of your results so you have numbers next time."],
         when=["last spring", "eight months ago", "after me"]),
    _sit("work", "Starting a new job on {day} and I've barely slept. What if they figure out I don't know what "
         "I'm doing?", "starting the new job", ["anxious", "on edge", "nervous"],
         ["Nobody expects a new hire to know everything in the first month.",
          "Write your questions down during the first week and ask them in batches."],
         ["I started a new job last year and barely slept the week before."],
         day=["Monday", "Thursday", "the first of the month"]),
    # school
    _sit("school", "I failed my {subject} final and now I might lose my scholarship. My parents don't know yet.",
         "failing your {subject} final", ["panicked", "ashamed", "scared"],
         ["Email the financial aid office, many scholarships have an appeal process for one bad semester.",
          "Ask your professor whether there's a retake or grade replacement policy."],
         subject=["chemistry", "calculus", "statistics", "anatomy"]),
    _sit("school", "Everyone in my {year} class seems to have friends already. I eat lunch in my car most days.",
         "eating lunch alone in your car", ["lonely", "invisible", "left out"],
         ["Join one club that meets weekly, it's easier to talk when there's something to do.",
          "Study groups are a low-pressure way to get to know classmates."],
         year=["freshman", "first-year", "transfer"]),
    _sit("school", "My thesis advisor said my draft was 'not graduate level work'. I've been working on it for "
         "{months} months.", "that comment from your advisor", ["crushed", "discouraged", "stupid"],
         ["Ask your advisor for three concrete changes that would bring it up to standard.",
          "The graduate writing center can give a second opinion on the draft."],
         months=["eight", "fourteen", "ten"]),
    _sit("school", "I have {n} exams next week and I can't make myself open a book. I just lie there scrolling.",
         "the exams coming up", ["frozen", "overwhelmed", "stuck"],
         ["Break the studying into 25 minute blocks with short breaks in between.",
          "Put your phone in another room and start with the easiest subject."],
         n=["four", "three", "five"]),
    _sit("school", "Dropped out of {program} this week. Part of me is relieved and part of me feels like a total "
         "failure.", "leaving {program}", ["conflicted", "unsure", "ashamed"],
         ["Check whether your credits transfer to other programs before deciding what's next.",
          "A career counselor can help you sort out options without committing to anything."],
         program=["nursing school", "the engineering program", "law school"]),
    # family
    _sit("family", "My parents are getting divorced after {years} years and they both keep venting to me about "
         "each other.", "being stuck between your parents", ["torn", "exhausted", "trapped"],
         ["Tell each of them that you won't discuss the other parent, and change the subject when they start.",
          "A family therapist can help when every conversation turns into a fight."],
         years=["25", "30", "19"]),
    _sit("family", "My {relative} has dementia and didn't recognize me when I visited yesterday.",
         "your {relative} not recognizing you", ["heartbroken", "shaken", "gutted"],
         ["Bring old photos or music on visits, long-term memories often last longer.",
          "Local dementia associations run support groups for family members."],
         ["My grandmother stopped recognizing me near the end too."],
         relative=["grandmother", "grandfather", "dad", "mom"]),
    _sit("family", "Had another screaming fight with my {relative} about {issue}. I'm {age} and I still feel like "
         "a kid around them.", "the fight with your {relative}", ["furious", "drained", "frustrated"],
         ["Set one clear boundary and repeat it calmly every time it's crossed.",
          "Leave the room when voices go up and come back to it the next day."],
         relative=["mom", "dad", "older brother", "sister"], issue=["money", "my career", "moving out"],
         age=["26", "31", "24"]),
    _sit("family", "My sister had a baby and nobody told me until a week later. I found out from a {where}.",
         "being left out of the news about the baby", ["hurt", "shut out", "forgotten"],
         ["Send a short message to your sister saying you'd like to meet the baby.",
          "Wait a few days before bringing up how you found out, so it doesn't turn into a fight."],
         where=["photo online", "coworker", "group chat I'm barely in"]),
    _sit("family", "I'm the only one taking care of my {relative} after the surgery and my siblings won't help "
         "at all.", "caring for your {relative} alone", ["resentful", "exhausted", "alone"],
         ["Make a written schedule and send it to your siblings with specific tasks and dates.",
          "Home care agencies can cover a few hours a week so you get a break."],
         relative=["mom", "dad", "grandma"]),
    # pets
    _sit("pets", "I had to put my {pet} {name} down this morning. {years} years old. The house is so quiet.",
         "losing {name}", ["heartbroken", "empty", "numb"],
         ["Some people make a small memory box with the collar and a few photos.",
          "Many vets can arrange a paw print impression if you call them this week."],
         pet=["dog", "cat"], name=["Biscuit", "Pepper", "Juno", "Milo", "Clementine"],
         years=["Fourteen", "Twelve", "Sixteen"]),
    _sit("pets", "My cat {name} has been missing for {days} days. I've put up posters everywhere and I check the "
         "porch every hour.", "{name} going missing", ["frantic", "helpless", "scared"],
         ["Call every shelter and vet within ten miles, and visit in person since descriptions get mixed up.",
          "Put a worn shirt and the litter box outside, the smell helps cats find their way home."],
         name=["Mochi", "Tigger", "Olive", "Salem"], days=["five", "nine", "three"]),
    _sit("pets", "The vet says my dog needs surgery that costs {amount} and I don't have it. I feel like the worst "
         "owner.", "not being able to afford the surgery", ["guilty", "trapped", "helpless"],
         ["Many vets offer payment plans if you ask directly.",
          "Veterinary schools often do surgeries at a lower cost."],
         amount=["$2,000", "$3,500", "$1,800"]),
    _sit("pets", "I had to rehome my {pet} because of my new lease. I keep looking at old photos of {name}.",
         "rehoming {name}", ["guilty", "sad", "empty"],
         ["Ask the new owners if they'd be open to sending a photo now and then.",
          "Limit how often you scroll through the old photos for a while."],
         ["I had to give up my dog when I moved for school."],
         pet=["dog", "rabbit", "cat"], name=["Bean", "Rosie", "Pickles", "Otis"]),
    # health
    _sit("health", "Just got diagnosed with {condition} at {age}. I keep reading horror stories online at 3am.",
         "the {condition} diagnosis", ["scared", "overwhelmed", "blindsided"],
         ["Patient forums for your specific condition are usually more accurate than general searches.",
          "Write your questions down before the next appointment so nothing gets forgotten."],
         condition=["type 1 diabetes", "MS", "epilepsy", "Crohn's disease"], age=["22", "29", "34"]),
    _sit("health", "My panic attacks are back. I had one in the {place} yesterday and had to leave my cart in the "
         "aisle.", "the panic attack at the {place}", ["embarrassed", "shaken", "scared"],
         ["Box breathing, four counts in, hold, out, hold, can take the edge off in the moment.",
          "Go back to the store for a short trip soon, avoiding it tends to make the fear grow."],
         place=["grocery store", "pharmacy", "hardware store"]),
    _sit("health", "I haven't slept more than {hours} hours a night in weeks. My brain just won't shut off.",
         "weeks without real sleep", ["wiped out", "foggy", "desperate"],
         ["Keep the same wake-up time every day, even after a bad night.",
          "CBT for insomnia works better than sleeping pills for a lot of people."],
         ["I went through months of insomnia in my twenties."], hours=["three", "four"]),
    _sit("health", "Chronic pain for {years} years now. People keep telling me to try yoga like I haven't tried "
         "everything.", "living with pain for {years} years", ["dismissed", "worn down", "frustrated"],
         ["A pain clinic with a team approach can be worth the referral.",
          "Keep a pain diary for a month, it helps doctors take you seriously."],
         years=["six", "nine", "four"]),
    _sit("health", "I relapsed after {days} days sober. I feel like I threw everything away.", "the relapse",
         ["ashamed", "defeated", "disappointed"],
         ["Go to a meeting today, even if you just sit in the back.",
          "Call your sponsor or counselor before the end of the day."],
         ["I relapsed after six months once."], days=["90", "200", "45"]),
    _sit("health", "My therapist is moving away and our last session is {when}. She's the only person I really "
         "talk to.", "losing your therapist", ["abandoned", "scared", "alone"],
         ["Ask her for two or three referrals before the last session.",
          "Some therapists keep seeing clients by video after they move."],
         ["My therapist retired a few years ago, right when I was finally opening up."],
         when=["Friday", "next week", "tomorrow"]),
    # depression
    _sit("depression", "I haven't left my apartment in {days} days except to get the mail. Dishes everywhere. I "
         "just don't care about anything.", "being stuck in your apartment for {days} days",
         ["numb", "hopeless", "heavy"],
         ["Start with one tiny task, like putting five dishes in the sink.",
          "Step outside for five minutes today, even just to the front door."],
         days=["ten", "twelve", "eight"]),
    _sit("depression", "Everyone keeps saying 'just think positive'. I can't even get out of bed before {time}.",
         "struggling to get out of bed", ["hopeless", "misunderstood", "tired"],
         ["Opening the curtains first thing in the morning helps some people.",
          "A doctor can check things like vitamin D and thyroid levels, which can make this worse."],
         time=["2pm", "noon", "3pm"]),
    _sit("depression", "Today is my birthday and nobody texted. Not even my {relative}.",
         "a birthday with no messages", ["forgotten", "invisible", "lonely"],
         ["Do one small thing for yourself today, like your favorite meal.",
          "Most sites let you hide your birthday, so next year there are no reminders of who forgot."],
         relative=["mom", "brother", "best friend"]),
    _sit("depression", "I used to love {hobby}. Now I look at my {gear} and feel nothing.",
         "losing interest in {hobby}", ["empty", "numb", "flat"],
         ["Losing interest in hobbies is a common symptom worth mentioning to a doctor.",
          "Try five minutes of it without any goal, and stop after five minutes."],
         pair=[{"hobby": "painting", "gear": "brushes"}, {"hobby": "playing guitar", "gear": "guitar"},
               {"hobby": "baking", "gear": "mixer"}, {"hobby": "running", "gear": "running shoes"}]),
    # friendship / loneliness
    _sit("friendship", "Moved to {city} for work {months} months ago and I still haven't made a single friend.",
         "moving to {city} without knowing anyone", ["isolated", "lonely", "homesick"],
         ["Meetup groups and volunteering are good ways to meet people as an adult.",
          "Hobby classes are easier than bars for making friends because there's something to talk about."],
         ["I moved to a city where I knew nobody a few years ago."],
         city=["Denver", "Leeds", "Toronto", "Austin", "Melbourne"], months=["six", "nine", "eight"]),
    _sit("friendship", "My best friend of {years} years stopped replying to my texts and I have no idea what I did.",
         "your best friend going silent", ["confused", "rejected", "hurt"],
         ["Send one message saying you miss them and leave the door open, then give it time.",
          "Sometimes silence is about their own situation, not you."],
         years=["ten", "fifteen", "seven"]),
    _sit("friendship", "Found out my friends had a {party} and didn't invite me. Saw it all on their stories.",
         "being left out of the {party}", ["excluded", "hurt", "unwanted"],
         ["Mute their stories for a few weeks.",
          "Plan something yourself and invite the one or two people you feel closest to."],
         party=["birthday dinner", "cabin weekend", "game night"]),
    _sit("friendship", "I'm always the one who reaches out. I stopped texting first to test it and nobody has "
         "messaged me in {days} days.", "nobody reaching out for {days} days", ["unimportant", "lonely", "forgotten"],
         ["Some people are just bad at starting conversations, even with friends they like.",
          "Put your energy into the one or two people who do reply warmly."],
         days=["eleven", "twenty", "fourteen"]),
    _sit("friendship", "My roommate and I had a big falling out about {issue} and now we just avoid each other in "
         "the kitchen.", "the falling out with your roommate", ["tense", "awkward", "on edge"],
         ["Write down the house rules you both agree on and put them on the fridge.",
          "Suggest a short sit-down on neutral ground, like a coffee shop."],
         ["I lived with a roommate I couldn't stand talking to for a whole year."],
         issue=["rent", "cleaning", "her boyfriend staying over"]),
    # relationships
    _sit("relationships", "My {partner} of {years} years broke up with me over text. I'm still wearing the {item} "
         "they gave me.", "the breakup", ["devastated", "blindsided", "shattered"],
         ["Mute their accounts for a while so you're not checking them every hour.",
          "Put the things they gave you in a box at the back of a closet for now."],
         partner=["boyfriend", "girlfriend", "partner"], years=["two", "four", "three"],
         item=["hoodie", "ring", "watch"]),
    _sit("relationships", "I found out my {partner} has been texting their ex every night for {months} months.",
         "finding out about those messages", ["betrayed", "sick", "foolish"],
         ["Talk to them when you're calm, with the facts in front of you.",
          "Couples counseling can help if you both want to work on it."],
         partner=["boyfriend", "girlfriend", "husband"], months=["two", "five", "three"]),
    _sit("relationships", "I'm {age} and I've never been in a relationship. Everyone around me is getting engaged.",
         "watching everyone pair off", ["left behind", "lonely", "inadequate"],
         ["Plenty of people meet partners in their thirties and later.",
          "Hobby groups and friends of friends work better than apps for a lot of people."],
         ["I was the single one at every wedding until my thirties."], age=["27", "32", "25"]),
    _sit("relationships", "My wife and I fight about {issue} every single night. I dread pulling into the driveway.",
         "fighting every night", ["worn out", "stuck", "tense"],
         ["Couples counseling can help if you both want to work on it.",
          "Agree on one set time a week to talk about the issue, and keep the other evenings off limits."],
         ["My partner and I went through a year of fighting almost every night."],
         issue=["money", "chores", "her mother", "the kids' schedule"]),
    # moving / housing
    _sit("moving", "We're being evicted at the end of the month and I have nowhere lined up. I have {kids} kids.",
         "the eviction", ["terrified", "desperate", "panicked"],
         ["Call 211 or your local housing office to ask about emergency assistance.",
          "Legal aid offices can check whether the eviction notice was done properly."],
         ["My family lost our apartment when I was a kid."],
         kids=["two", "three"]),
    _sit("moving", "Moved back in with my parents at {age} after my lease ended. I feel like I've gone backwards.",
         "moving back in with your parents", ["embarrassed", "stuck", "defeated"],
         ["Set a savings target and a rough move-out date so it feels temporary.",
          "Pay a small rent or take on chores so it feels like an arrangement between adults."],
         ["I moved back home at thirty after a breakup."], age=["29", "33", "27"]),
    _sit("moving", "Just moved across the country to {city}. The apartment is empty and I cried on the floor last "
         "night.", "the move to {city}", ["homesick", "overwhelmed", "alone"],
         ["Unpack one room completely first so you have one space that feels settled.",
          "Join a local forum or community board for your new neighborhood."],
         city=["Seattle", "Halifax", "Phoenix", "Glasgow"]),
    # money
    _sit("money", "I'm {amount} in debt and every phone call makes me jump because I think it's a collector.",
         "the debt", ["trapped", "ashamed", "anxious"],
         ["Non-profit credit counseling services can help you build a repayment plan for free.",
          "Call the creditors and ask about hardship programs, a lot of them have one."],
         amount=["$18,000", "$40,000", "$9,000"]),
    _sit("money", "My car died and the repair is more than my rent. I need it to get to {where}.",
         "the car breaking down", ["stuck", "panicked", "stressed"],
         ["Get a second quote from an independent mechanic before paying anything.",
          "Some credit unions offer small repair loans at low interest."],
         where=["work", "my night shifts", "my kid's school"]),
    _sit("money", "I had to tell my kids we can't do {thing} this year because money is so tight.",
         "telling your kids about {thing}", ["guilty", "ashamed", "sad"],
         ["Community centers and libraries run free events most weekends.",
          "Kids tend to remember the time together more than what was spent."],
         thing=["Christmas presents", "the summer trip", "birthday parties"]),
    # loss
    _sit("loss", "My {relative} passed away {when}. I keep picking up my phone to call them.",
         "losing your {relative}", ["lost", "heartbroken", "numb"],
         ["Grief support groups exist in most areas and are usually free.",
          "Writing a letter to the person you lost helps some people."],
         relative=["grandpa", "dad", "aunt", "mom"], when=["last week", "on Sunday", "two months ago"]),
    _sit("loss", "It's been a year since my {relative} died and everyone acts like I should be over it.",
         "the first year without your {relative}", ["alone", "pressured", "sad"],
         ["Many grief groups run sessions for people in the first year or two after a loss.",
          "Plan something on the anniversary that honors them, even something small."],
         relative=["brother", "husband", "best friend"]),
    _sit("loss", "A guy from my {group} died in a car accident. We weren't super close but I can't stop thinking "
         "about it.", "the death of someone from your {group}", ["shaken", "unsettled", "sad"],
         ["Going to the memorial can help, even if you weren't close.",
          "Teams often organize something in memory of a member, and taking part can help."],
         ["Someone from my running club died suddenly a few years ago."],
         group=["soccer team", "climbing gym", "bowling league"]),
    _sit("loss", "My friend had a miscarriage and I don't know how to be there for her. I feel useless.",
         "watching your friend go through this", ["helpless", "useless", "sad"],
         ["Drop off a meal and a short note without expecting a reply.",
          "Note the due date on your calendar and check in around then."],
         ["My sister went through a miscarriage and I felt useless too."]),
    # anxiety
    _sit("anxiety", "I have to give a presentation to {audience} on {day} and I'm already shaking just thinking "
         "about it.", "the presentation", ["terrified", "nervous", "dreadful"],
         ["Practice it out loud three times, once in front of someone.",
          "Memorize the first two sentences, the rest usually follows."],
         audience=["the whole department", "forty people", "the board"], day=["Monday", "Wednesday"]),
    _sit("anxiety", "I can't make phone calls. I need to call the {place} to reschedule and I've been putting it "
         "off for {weeks} weeks.", "that phone call", ["anxious", "frozen", "ashamed"],
         ["Write the call script down word for word before you dial.",
          "Many offices let you reschedule by email or through an online portal."],
         place=["dentist", "doctor's office", "landlord"], weeks=["two", "three"]),
    _sit("anxiety", "Every time my chest tightens I'm convinced I'm having a heart attack. I've been to the ER {n} "
         "times this year.", "the trips to the ER", ["scared", "embarrassed", "exhausted"],
         ["Ask your doctor for a full cardiac workup once, so you have results to point back to.",
          "Panic and heart symptoms overlap a lot, and a therapist who treats panic disorder can help."],
         n=["three", "four", "five"]),
    _sit("anxiety", "I replay every conversation I have for hours afterwards, looking for what I said wrong.",
         "replaying conversations", ["exhausted", "self-conscious", "trapped"],
         ["Give yourself ten minutes of replay time, then switch to something that needs your hands.",
          "A therapist who does CBT can help you challenge those thoughts."]),
    # self-esteem
    _sit("self_esteem", "I looked at photos from {occasion} and I hate how I look. I untagged myself from all of "
         "them.", "seeing those photos", ["ashamed", "low", "self-conscious"],
         ["Mute accounts that make you compare yourself to others.",
          "Camera angles and lighting change a face more than people think."],
         occasion=["my cousin's wedding", "the work party", "graduation"]),
    _sit("self_esteem", "My coworker said I'm 'kind of a lot' and now I can't stop thinking about it.",
         "that comment from your coworker", ["self-conscious", "hurt", "embarrassed"],
         ["Ask a coworker you trust how you come across in meetings.",
          "Write down three things you did well each day, even small ones."]),
    _sit("self_esteem", "I got rejected from all {n} of the programs I applied to. Maybe I'm just not smart enough.",
         "the rejections", ["worthless", "crushed", "discouraged"],
         ["Ask one or two programs for feedback on your application.",
          "Admission rates for those programs are often under ten percent."],
         n=["six", "eight", "five"]),
    # parenting
    _sit("parenting", "My {age} year old screamed 'I hate you' at me tonight. I know kids say things but it really "
         "stuck.", "hearing that from your kid", ["hurt", "shaken", "inadequate"],
         ["Talk with them tomorrow when everyone is calm.",
          "Take a ten minute break in another room when things get heated."],
         age=["seven", "nine", "fourteen"]),
    _sit("parenting", "New mom here. I love my baby but I haven't felt like myself in {weeks} weeks and I cry every "
         "afternoon.", "these weeks since the birth", ["lost", "overwhelmed", "guilty"],
         ["Your doctor can screen for postpartum depression, it's common and treatable.",
          "Parenting groups at the local library are a good way to meet other parents."],
         weeks=["six", "eight", "ten"]),
    _sit("parenting", "My son got suspended for fighting and he won't tell me what happened. I feel like I'm "
         "failing him.", "your son's suspension", ["worried", "helpless", "guilty"],
         ["Ask the school for the incident report and a meeting with the counselor.",
          "Kids often talk more during a car ride than face to face."]),
    # small wins
    _sit("recovery", "I finally showered and cleaned my room after {days} days of depression. It's small but I "
         "wanted to tell someone.", "cleaning your room after {days} rough days", ["proud", "lighter", "relieved"],
         ["Write today down somewhere so you can look back on it on a harder day."],
         valence="pos", days=["twelve", "nine", "twenty"]),
    _sit("recovery", "{days} days sober today. Nobody in my real life knows, so I'm telling you all.",
         "reaching {days} days sober", ["proud", "hopeful", "strong"],
         ["Plan something small to mark the milestone."], valence="pos", days=["100", "30", "365"]),
    _sit("recovery", "I went to my first therapy appointment today. I almost turned around in the parking lot but I "
         "went in.", "going to that first appointment", ["proud", "relieved", "hopeful"],
         ["Book the next appointment before you leave, so it's already decided."], valence="pos"),
    _sit("work", "Got the job! After {n} rejections someone finally said yes.",
         "getting the job after {n} rejections", ["relieved", "proud", "excited"],
         ["Read the contract carefully before you sign it."], valence="pos", n=["30", "14", "22"]),
    _sit("family", "Talked to my {relative} about my anxiety for the first time and they actually listened.",
         "opening up to your {relative}", ["relieved", "lighter", "hopeful"],
         ["Keep the conversation going in small pieces, it doesn't have to be one big talk."],
         valence="pos", relative=["dad", "mom", "older sister"]),
    _sit("anxiety", "I made it through a whole week of {where} without a panic attack.",
         "a full week of {where} without a panic attack", ["proud", "hopeful", "relieved"],
         ["Note what was different this week so you can repeat it."], valence="pos",
         where=["classes", "work", "commuting"]),
]

# Openings and endings give each slot-filled post its own voice.
POST_PREFIXES = {"neg": ["", "", "", "Throwaway account. ", "Not sure where else to post this. ",
                         "Long time lurker. ", "Needed to get this off my chest. ", "Idk. "],
                 "pos": ["", "", "Small win today. ", "Had to share this. ", "Long time lurker. "]}
POST_SUFFIXES = {"neg": ["", "", "", " Just needed to say it somewhere.", " Any advice is welcome.",
                         " Thanks for reading.", " I don't really know what I'm asking.", " Ugh."],
                 "pos": ["", "", " Just wanted to share.", " Thanks for reading.", " Still can't quite believe it."]}

# ==================================================================================================
# EPITOME: fragment banks. ER = warmth/compassion (1 generic, 2 specific and heartfelt);
# IP = understanding (1 generic, 2 a specific inference or a shared similar experience);
# EX = a question (1 generic, 2 about specific feelings/experiences). No fragment outside EX asks a
# question and no fragment outside ER offers sympathy.
# ==================================================================================================

ER_BANK = {
    "neg": {
        1: ["I'm sorry to hear that.", "Sorry you're dealing with this.", "That sucks.", "That really sucks, man.",
            "Ugh, that's rough.", "Hang in there.", "Things will get better.", "Sending hugs.", "Oh no, I'm sorry.",
            "Damn, that's tough.", "It'll be okay.", "Wishing you the best.", "Sorry, friend.", "That's awful.",
            "Stay strong.", "Big hugs.", "Oof. Sorry.", "That's so unfair.", "I'm sorry."],
        2: ["I'm so sorry about {event}, my heart really goes out to you.",
            "Reading about {event} honestly made me sad for you.",
            "My heart breaks for you. {Event} is such a painful thing to face.",
            "Oh friend, I'm really sad to hear about {event}.",
            "I genuinely care about how this turns out for you, and I'm so sorry about {event}.",
            "Honestly this made me tear up. I'm so sorry about {event}.",
            "I'm heartbroken for you, {event} is so unfair.",
            "Ugh, I feel so angry on your behalf about {event}.",
            "Sending you so much love and strength while you deal with {event}.",
            "Wow, I'm truly sorry about {event}. I feel for you so much.",
            "Please know a stranger is thinking of you tonight and feeling for you after {event}.",
            "I feel really sad for you right now, {event} is a lot for anyone.",
            "Oh no, I'm so sorry. {Event} sounds awful and I'm worried about you.",
            "I'm really, really sorry about {event}. You deserve so much better."],
    },
    "pos": {
        1: ["That's great.", "Good for you!", "Nice work.", "Awesome!", "Congrats!", "Yay!", "Nice one.",
            "Well done."],
        2: ["I'm genuinely so happy for you, {event} is a big deal.",
            "This made my whole day, I'm so proud of you for {event}.",
            "Honestly I'm cheering for you so hard right now!",
            "Wow, I'm thrilled for you. {Event} is huge!",
            "I'm so proud of you, stranger. {Event} deserves to be celebrated.",
            "This made me smile so much, I'm really happy for you."],
    },
}

IP_BANK = {
    "neg": {
        1: ["I understand.", "I get it.", "I know how you feel.", "I understand how you feel.", "I can relate.",
            "Been there.", "I know what that's like.", "I hear you.", "Makes sense.",
            "I can see where you're coming from.", "Yeah, I get that.", "I totally understand."],
        2: ["It sounds like {event} has left you feeling {feel}, and that's a very human reaction.",
            "Feeling {feel} after {event} makes complete sense.",
            "I can see why {event} would leave you feeling {feel}.",
            "It seems like you've been holding a lot in, and {event} pushed it over the edge.",
            "{Event} would knock anyone off balance, so of course you feel {feel}.",
            "You clearly care a lot, which is exactly why {event} hits this hard.",
            "It must be exhausting to keep going every day while feeling {feel}.",
            "{mine} I remember feeling {feel} for weeks, so I get why this is hitting you hard.",
            "Something similar happened to me. {mine} I felt {feel} too.",
            "Reading this, I get the sense you've been holding it together on your own for a long time.",
            "That mix of feeling {feel} and still having to act normal around people is so draining.",
            "No wonder you feel {feel}, anyone would in your place.",
            "{mine} So I know how {feel} this can make a person feel.",
            "You're not overreacting. Anyone would feel {feel} after {event}.",
            "It sounds like {event} came on top of a lot of other things you've been carrying."],
    },
    "pos": {
        1: ["I get it.", "I know that feeling.", "I can relate.", "Makes sense."],
        2: ["It sounds like {event} took a lot more effort than most people would guess.",
            "After the stretch you've had, feeling {feel} about {event} makes total sense.",
            "I've been through a rough patch like that, and the first real win felt enormous.",
            "You can tell from how you wrote this that {event} means a lot to you.",
            "{mine} So I know how much a moment like this counts."],
    },
}

EX_BANK = {
    "neg": {
        1: ["What happened?", "Do you want to talk about it?", "How are you doing now?", "What's going on?",
            "Can you tell me more?", "Want to talk?", "Are you okay?", "How are you holding up?",
            "Anything else going on?", "What's up?"],
        2: ["What part of {event} has been weighing on you the most?",
            "How have you been coping day to day since {event}?",
            "Have you been feeling {feel} most of the time, or does it come in waves?",
            "When you think about {event}, what's the first feeling that comes up?",
            "Does anyone close to you know you've been feeling {feel}?",
            "What goes through your mind at night when you think about {event}?",
            "Was there a moment when you first noticed feeling this {feel}?",
            "Are you feeling alone with {event} right now?",
            "Do you feel like you can talk to anyone in your life about {event}?",
            "What would help you feel a little less {feel} this week?"],
    },
    "pos": {
        1: ["How do you feel now?", "What's next for you?", "How are you feeling today?"],
        2: ["How did it feel in the moment, right after {event}?",
            "What helped you push through when it would have been easier to give up?",
            "Is there anyone in your life you've told about {event}?",
            "What do you think changed for you this time?",
            "Were you nervous right before, or did it feel calm?"],
    },
}

# Shared experiences for strong interpretations, per topic ("{mine}").
SHARED = {
    "work": ["Work did something similar to me a few years back.",
             "I went through a really rough stretch at a job not long ago."],
    "school": ["I had a semester that went sideways like this in college.",
               "School hit me the same way when I was twenty."],
    "family": ["My family went through something like this when I was in my twenties.",
               "I've had my own version of this with my parents."],
    "pets": ["I lost my old cat a couple of years ago.", "I went through something like this with my dog last spring."],
    "health": ["I spent most of last year dealing with my own health scare.",
               "My body and brain have put me through something similar."],
    "depression": ["I had a long depressive stretch a few years ago.", "I've been stuck in that same fog myself."],
    "friendship": ["I drifted out of a friend group a couple of years ago.",
                   "I've been the one who got left out, too."],
    "relationships": ["My last relationship ended in a way that still stings.",
                      "I went through something like this with an ex."],
    "moving": ["I moved to a new city alone at twenty-five.", "I had to pack up my whole life on short notice once."],
    "money": ["I spent two years buried in bills I couldn't pay.",
              "Money got so tight for me once that I dreaded opening the mail."],
    "loss": ["I lost my grandmother three years ago.", "I lost someone close to me not that long ago."],
    "anxiety": ["I've dealt with anxiety like this since high school.",
                "My own anxiety used to flare up in almost the same way."],
    "self_esteem": ["I've had stretches where I picked myself apart like this.",
                    "I spent years getting stuck on comments like that."],
    "parenting": ["I have two kids and I've had nights exactly like this.",
                  "My first year as a parent looked a lot like what you're describing."],
}
SHARED_POS = ["I had my own first good week like that last year.", "I hit a small milestone like this not long ago."]

# Neutral sentences: advice or information with no warmth, no understanding and no question. Each
# situation carries its own; these fit any struggle, POS_ADVICE any small win.
GENERIC_ADVICE = ["A therapist can help you work through this.", "Try to get outside for a short walk every day.",
                  "Keep a regular sleep schedule as much as you can.", "Drink some water and eat something today.",
                  "Writing your thoughts down before bed might help.",
                  "The sidebar has crisis lines if things get worse.",
                  "I would talk it through with someone you trust before deciding anything.",
                  "Oh, the pinned post at the top of this sub has a list of resources.",
                  "If you can, take a day off to rest.", "Honestly, a good night's sleep changes a lot.",
                  "It might help to make a list of what's in your control and what isn't.",
                  "Check out the weekly support thread on this sub."]
POS_ADVICE = ["Write today down somewhere so you can look back on it on a harder day.",
              "Keep the routine going tomorrow, even a smaller version of it.",
              "Plan something small to mark the milestone.",
              "Tell one person in your life about it when you're ready.",
              "Set a reminder to check in with yourself next week.",
              "Honestly, a small treat tonight is earned."]

# ==================================================================================================
# EPITOME: fully hand-written pairs, labelled by hand. Tags mark the rationale spans:
# <er1>/<er2> emotional reactions, <ip1>/<ip2> interpretations, <ex1>/<ex2> explorations.
# Each entry: (seeker post, [responses]).
# ==================================================================================================

HAND_PAIRS = [
    ("I've been on the waitlist for a psychiatrist for four months. Today they called to say it'll be another three.",
     ["<er1>Ugh, that's so frustrating.</er1> Ask to be put on the cancellation list, people drop out all the time "
      "and you can get in much sooner.",
      "<ip2>Four months of waiting and then being pushed back again would make anyone feel like the system doesn't "
      "care whether you get help.</ip2> <ex2>How are you managing your symptoms in the meantime?</ex2>"]),
    ("does anyone else get really sad on sunday evenings? like a weight settles on my chest around 5pm",
     ["<ip2>yes!! every sunday around the same time i start dreading the week and get that exact heavy chest "
      "feeling</ip2>. planning something small for sunday nights helped me a bit, like a show i only let myself "
      "watch then.",
      "Try writing out your Monday tasks on Friday afternoon so there's less left hanging over the weekend."]),
    ("My dad told me that therapy is for weak people. I've been going secretly for two months.",
     ["<er2>I'm really glad you kept going anyway, and I'm sad you can't share it with him.</er2> <ip2>Hiding "
      "something that's helping you must feel lonely, like you're living a second life every week.</ip2>"]),
    ("I snapped at my little brother today for no reason and he looked so hurt. I keep thinking about his face.",
     ["Apologize to him tomorrow and tell him it wasn't about him. Kids bounce back fast when an adult owns it.",
      "<ex2>Was something else building up for you before it happened?</ex2> <ip2>Usually when we snap out of "
      "nowhere it's because we've been running on empty for a while.</ip2>"]),
    ("I have no motivation for anything. Not even things I used to enjoy.",
     ["<ip1>I know the feeling.</ip1>",
      "<ex1>What's been going on lately?</ex1>",
      "Losing interest in things you used to enjoy is a common symptom of depression. It's worth bringing up with "
      "a doctor because it can be treated."]),
    ("My girlfriend cheated and the worst part is all my friends knew.",
     ["<er1>Damn, that sucks.</er1> <ip2>Getting betrayed by her is one thing, but finding out your friends kept it "
      "from you makes it feel like the ground moved under everything.</ip2>",
      "<er2>Man, I'm so sorry. That's a double betrayal and I feel terrible for you.</er2> <ex2>Have any of those "
      "friends tried to explain why they didn't tell you?</ex2>"]),
    ("I get anxious every time my phone buzzes. I've started leaving it in another room.",
     ["Turn off notifications for everything except calls from a few people. It's a small change but it makes a "
      "real difference.",
      "<ip2>Same here, for a while every buzz felt like bad news was coming, so I kept mine in a drawer.</ip2> "
      "<ex2>Is there someone in particular you're worried will be messaging?</ex2>"]),
    ("I lost 30 pounds this year and nobody has said a word. I'm not fishing, I just thought someone would notice.",
     ["<er2>Thirty pounds is huge and I'm genuinely impressed, good on you!</er2>",
      "<ip2>It's weird when you put a year of effort into something and it feels invisible to everyone around "
      "you.</ip2>"]),
    ("My son was diagnosed with autism today. I don't even know what to feel.",
     ["<er1>Wishing you and your son the best.</er1> The local parent groups are usually the best place to find "
      "therapists who have openings.",
      "<ex1>How are you doing?</ex1>"]),
    ("Work from home has made me forget how to talk to people. I went to a party and stood in the corner for two "
     "hours.",
     ["<ip2>It's like a muscle that gets weak when you don't use it, so of course the first party back felt "
      "awkward.</ip2> Start with smaller things like coffee with one person before going back to big groups.",
      "<ip1>lol same.</ip1> parties are the worst."]),
    ("I think I'm drinking too much. It started as a glass after work and now it's most of a bottle.",
     ["Try tracking it for a week without changing anything, just writing down each drink. Seeing the actual "
      "numbers helped my uncle cut back.",
      "<er2>I'm really glad you noticed this and said it out loud, that takes guts and I'm rooting for you.</er2> "
      "<ex2>What does the evening usually look like before you pour the first glass?</ex2>"]),
    ("My mom keeps commenting on my weight every time I visit.",
     ["<ip2>That would make me dread every visit, knowing it's coming before you're even through the door.</ip2>",
      "<ex2>Have you ever told her directly how those comments land with you?</ex2>"]),
    ("I was supposed to be the first in my family to graduate but I'm failing out.",
     ["<er1>That's rough, hang in there.</er1> Many schools let you take a leave of absence instead of failing "
      "out, which protects your record.",
      "<ip2>Carrying your whole family's hopes on top of your own must make every bad grade feel ten times "
      "heavier.</ip2> <ex2>Does your family know how much you're struggling?</ex2>"]),
    ("I finally told my friends I'm gay and they threw me a little party. I'm so happy.",
     ["<er2>This is the best thing I've read all week, I'm so happy for you!</er2>",
      "<er1>Congrats!</er1>",
      "<er1>That's awesome.</er1> <ex2>What made you decide this was the right time to tell them?</ex2>"]),
    ("My landlord is selling the building and we have 60 days to get out.",
     ["Check your local tenant laws. In some places the new owner has to honor the existing lease.",
      "<ip2>Sixty days sounds like a lot until you start looking at listings, then it feels like no time at "
      "all.</ip2> In my city the housing office keeps a list of rentals that don't show up on the big sites."]),
    ("i feel like a burden to everyone",
     ["<ex1>Why do you feel that way?</ex1>",
      "<er2>Hey, I care about you and I'm worried reading this.</er2> <ip2>When depression talks, it tells you "
      "that needing anything makes you a burden, and it's very convincing.</ip2> <ex2>Has someone said or done "
      "something recently that made you feel this way?</ex2>"]),
    ("I cried at my desk today because my coworker was nice to me. That's how long it's been.",
     ["<ip2>When you've gone a long time without kindness, even a small bit of it can hit harder than you "
      "expect.</ip2>",
      "<er1>Aw, hugs.</er1>"]),
    ("My dog is getting old and I'm already grieving him and he's still here.",
     ["<ip2>I went through this with my old lab. I kept watching him sleep and grieving every small change before "
      "he was even gone.</ip2> Make a list of the things he still loves and do them often.",
      "There are some good books on preparing for a pet's end of life, and your vet can walk you through the "
      "options."]),
    ("I have a job interview tomorrow and I'm so nervous I can't eat.",
     ["<er1>Good luck!</er1> Eat something small like toast, your brain needs fuel.",
      "<ex2>What part of the interview worries you most, the questions or just walking in?</ex2>",
      "<ip1>I get it.</ip1> Practice your answers out loud tonight and then stop."]),
    ("Three years clean from self harm today.",
     ["<er2>I'm so proud of you! Three years is incredible.</er2>",
      "<er1>Nice!</er1> <ex1>How are you feeling?</ex1>"]),
    ("I don't know how to tell my parents I want to switch majors from pre-med to art.",
     ["Put together a plan that shows how you'd support yourself with the new major. Parents often worry more "
      "about money than about the subject itself.",
      "<ip2>It sounds like you've known for a while, and the hard part isn't the decision but disappointing "
      "them.</ip2>"]),
    ("Everyone at my new school already has their friend group. It's October and I still eat alone.",
     ["Join one club, any club. It's way easier to talk to people when you're doing something together.",
      "<er1>That sucks, sorry.</er1> <ip2>I transferred in tenth grade and spent the whole first semester in the "
      "library at lunch, so I know how long those days feel.</ip2>"]),
    ("I quit my job with no plan. I was miserable. Now I'm scared I made a huge mistake.",
     ["<ip2>Leaving somewhere that was making you miserable took courage, and the fear afterwards doesn't mean it "
      "was the wrong call.</ip2> Give yourself a week to rest before you start applying.",
      "<ex2>What was the moment you decided you couldn't stay anymore?</ex2>"]),
    ("My best friend is moving to another continent next month.",
     ["<er1>Aw, that's sad.</er1>",
      "Set up a regular call time before she leaves, like every other Sunday. It's much easier to keep a habit "
      "than to start one later."]),
    ("I get so angry when people chew loudly. I had to leave the break room today.",
     ["Look up misophonia. Noise cancelling earbuds help a lot of people with it.",
      "<ip2>Same, for me it's like every chewing noise is amplified and my whole body goes tense.</ip2>"]),
    ("My husband was deployed yesterday. The bed feels huge.",
     ["<er2>I'm so sad for you tonight, and sending you all my love while he's away.</er2>",
      "<ip2>The first nights are always the strangest, when the house is full of reminders and his side of the bed "
      "is empty.</ip2> <ex2>Do you have people nearby who can keep you company this week?</ex2>"]),
    ("I keep comparing myself to people on Instagram and feel like I'm behind in life.",
     ["Mute or unfollow the accounts that drag you down. You don't owe anyone your attention.",
      "<ip1>I hear you.</ip1> Social media is a highlight reel."]),
    ("Got my first paycheck from my first real job and paid my mom's electric bill with it.",
     ["<er2>That's beautiful, I'm so proud of you and I bet she is too!</er2>",
      "<ex2>How did she react when she found out?</ex2>"]),
    ("My boss keeps scheduling me on my days off even though I asked him not to.",
     ["Get your availability in writing and send it to HR. If they keep ignoring it, it's documented.",
      "<er1>Ugh, that's annoying.</er1> <ex1>What did he say?</ex1>"]),
    ("Haven't talked to anyone in days. Just me and my cat.",
     ["<ex2>Do you feel lonely, or has the quiet been a relief?</ex2>",
      "Cats are great company."]),
    ("I finally got diagnosed with ADHD at 35 and I've been crying on and off all day.",
     ["<ip2>That kind of crying is often grief and relief at once, for all the years you blamed yourself for "
      "things that weren't your fault.</ip2>",
      "Look into ADHD coaching as well as medication. Some insurance plans cover both."]),
    ("Our baby was born at 30 weeks and is in the NICU. I'm writing this from the parents' lounge.",
     ["<er2>Oh, my heart goes out to you and your little one. I'm holding you both in my thoughts.</er2>",
      "<er1>Wishing you strength.</er1> Ask the nurses about kangaroo care, it's allowed in a lot of units even "
      "for small babies.",
      "<ex2>How are you holding up, sleeping at the hospital and watching the monitors all day?</ex2>"]),
    ("My therapist said I might have borderline personality disorder. I googled it and now I'm spiraling.",
     ["Search results tend to show the worst cases. Ask your therapist for a proper assessment before reading "
      "more.",
      "<ip2>Getting a label like that out of nowhere can feel like someone just rewrote who you are.</ip2> "
      "<ex2>What exactly did you read that's scaring you?</ex2>"]),
    ("My kid's teacher called again. Third time this month. I don't know what else to do.",
     ["Request a meeting with the teacher and the school counselor together so everyone is working from the same "
      "plan.",
      "<ip1>I understand.</ip1> <ex1>What happened this time?</ex1>"]),
    ("I keep having nightmares about the car accident.",
     ["<er1>That's awful.</er1> EMDR therapy is designed for exactly this kind of thing.",
      "<ex2>Are the nightmares replaying the crash itself, or something else from that day?</ex2>"]),
    ("Failed my driving test for the third time. The examiner barely looked at me.",
     ["<er1>Oof, that sucks.</er1> Book a couple of lessons right before the next test just to get used to the "
      "route.",
      "Plenty of people need four or five tries. Ask the test center which route they use most."]),
    ("I got into my dream grad program!!! I still can't believe it.",
     ["<er2>YES! I'm so thrilled for you, congratulations!</er2>",
      "<er1>Congrats.</er1> <ex1>Which school?</ex1>"]),
    ("My grandfather doesn't remember my name anymore, but he still hums the song he used to sing me.",
     ["<ip2>It's like part of him still knows you even when the words are gone, which must be both comforting "
      "and painful.</ip2>",
      "<er2>That made me tear up. I'm so sorry, and I'm glad you still have that song with him.</er2>"]),
    ("I want to go back to school at 40 but I feel too old.",
     ["Plenty of community colleges have programs aimed at adult learners, with evening classes.",
      "<ip2>I went back at 38 and spent the first month convinced everyone thought I was the professor, but that "
      "feeling faded fast.</ip2>"]),
    ("I had a panic attack on the train and a stranger held my hand until it passed.",
     ["<er2>That stranger sounds wonderful and I'm really glad you weren't alone in that moment.</er2>",
      "<ex2>How did it feel to let a stranger help you like that?</ex2>"]),
    ("Roommate keeps eating my food.",
     ["Get a small fridge for your room or a lock box. Talking about it rarely works in my experience.",
      "<er1>That's annoying.</er1>"]),
    ("I've been single for five years and I'm starting to think something is wrong with me.",
     ["<ip2>When years go by it's easy to turn 'I haven't met the right person' into 'I'm the problem', even when "
      "there's no evidence for it.</ip2>",
      "<ex1>Why do you think that?</ex1>"]),
    ("My brother has been in prison for two years and gets out next month. I don't know if I want to see him.",
     ["<ex2>What feels hardest about seeing him again, the past or not knowing who he is now?</ex2>",
      "You don't have to decide before he's out. You can set the terms of contact later."]),
    ("My hair is falling out from stress and it's making the stress worse.",
     ["A dermatologist can check for telogen effluvium. It usually grows back once the stressor is gone.",
      "<ip2>It's a cruel loop, the stress shows up in the mirror and then the mirror makes the stress "
      "louder.</ip2> <er1>Hang in there.</er1>"]),
    ("Today I cooked a real meal for the first time in months instead of cereal.",
     ["<er1>Nice!</er1> <ex1>What did you make?</ex1>",
      "<ip2>After months of cereal, cooking a real meal means you had energy for yourself again, and that's a sign "
      "of things shifting.</ip2>"]),
    ("I yelled at a customer today. I've never done that. I think I'm going to get fired.",
     ["Go to your manager first and explain before the customer complains. Owning it early usually helps.",
      "<ip2>If you've never done that before, you must have been running on fumes for a long time before it "
      "happened.</ip2>"]),
    ("I'm 19 and I've never had a job. Every application wants experience.",
     ["Volunteer work and school projects count as experience. Put them on your resume.",
      "<ip1>I know what that's like.</ip1> Keep applying."]),
    ("My friend died by suicide last month and I keep rereading our last texts.",
     ["<er2>I'm so deeply sorry. Losing a friend this way is devastating and my heart is with you.</er2>",
      "<ip2>Rereading those texts is such a common part of grieving like this, searching for a sign or just "
      "holding on to their voice.</ip2> <ex2>Do you have anyone you can talk to who knew her too?</ex2>",
      "There are support groups specifically for people who lost someone to suicide. Your local crisis center "
      "can point you to one."]),
    ("I'm 28 and still can't drive. I'm embarrassed every time someone offers me a ride.",
     ["Lots of adults learn late. A driving school can set you up with an instructor who specializes in nervous "
      "drivers.",
      "<ex2>Is it the driving itself that scares you, or having to ask for help learning?</ex2>"]),
    ("My cat knocked my coffee onto my laptop right before a deadline.",
     ["<er1>Oh no!</er1> Turn it off, flip it upside down, and don't try to power it back on for a day.",
      "lol cats. rice doesn't work by the way, just let it dry open."]),
    ("I'm scared to go to sleep because I know I'll have to wake up and do it all again.",
     ["<ip2>When every day feels like a repeat of the last bad one, night becomes the only break, and you don't "
      "want it to end.</ip2>",
      "<er1>Hugs.</er1> <ex1>What's going on during the days?</ex1>"]),
    ("Just found out I'm pregnant. We weren't trying and I have no idea how I feel.",
     ["<ex2>What was the very first thing you felt when you saw the result?</ex2>",
      "Make an appointment with your doctor to talk through your options before deciding anything."]),
    ("I keep canceling plans with friends because I can't deal with people right now. I'm worried they'll stop "
     "inviting me.",
     ["Tell them you're going through something and you still want to be invited. Most friends will keep asking "
      "if they know it's not personal.",
      "<ip2>I went through a winter like that and worried about the same thing, it felt like I was slowly "
      "disappearing from everyone's plans.</ip2>"]),
    ("Found my mom's old recipe box while packing up her house.",
     ["<ip2>Finding her handwriting must have been such a bittersweet moment.</ip2> <er1>Sending warmth.</er1>",
      "Scan the cards so they don't fade. Some people get a favorite one printed on a tea towel."]),
    ("My coworker took credit for my project in front of our director.",
     ["Send a follow-up email to the director summarizing your contributions and attaching the files. Keep it "
      "factual.",
      "<er1>What a jerk.</er1>"]),
]

# Level counts for ~600 pairs, scaled from the real release (ER 2037/895/152, IP 1626/113/1345,
# EX 2604/104/376 of 3,084). The composer fills whatever the hand-written pairs leave.
EPITOME_TARGET = {"er": (396, 174, 30), "ip": (316, 22, 262), "ex": (507, 20, 73)}
EPITOME_FILENAMES = {"er": "emotional-reactions-reddit.csv", "ip": "interpretations-reddit.csv",
                     "ex": "explorations-reddit.csv"}

# ==================================================================================================
# EmpatheticDialogues-format scripts. A script is an emotion, a situation prompt with {slots} and up to
# six turns: speaker turns are lists of alternatives, listener turns map a style to a reply:
# w = warm (emotional reaction), u = understanding (interpretation), q = question (exploration),
# n = neutral/plain. Later speaker turns read naturally after any listener style.
# ==================================================================================================


def _ed(emotion, prompt, slots, *turns):
    return {"emotion": emotion, "prompt": prompt, "slots": slots, "turns": list(turns)}


def L(**styles):  # short on purpose: used for every listener turn below
    return styles


ED_SCRIPTS = [
    _ed("proud", "My {who} graduated from nursing school this weekend after years of night classes.",
        {"who": ["daughter", "son", "younger sister", "husband"]},
        ["My {who} just graduated from nursing school!",
         "I got to watch my {who} walk across the stage at nursing graduation on Saturday."],
        L(w="That's wonderful news, you must be bursting with pride!",
          u="Years of night classes is a huge commitment, so that moment must have meant so much.",
          q="Congratulations! How long did the whole program take?", n="Nice. Nurses are always in demand."),
        ["Five years in total. They worked full time the whole way through."],
        L(w="Wow, I'm so happy for your whole family, what an achievement.",
          u="Working full time and studying at night takes real grit, no wonder you're proud.",
          q="Do they already know where they want to work?", n="That's a long time. Most programs are shorter."),
        ["They start at the children's hospital next month. I'm still smiling about it."],
        L(w="That's fantastic, give them a big congratulations from me!",
          q="Will they be working night shifts at first?", n="The children's hospital is a good place to start.")),
    _ed("afraid", "I had a biopsy on {day} for {thing} and the results still aren't back.",
        {"day": ["Monday", "Thursday"], "thing": ["a lump on my neck", "a spot on my back", "a lump in my breast"]},
        ["I had a biopsy on {day} for {thing} and I'm scared of what they'll find.",
         "Still waiting on biopsy results for {thing}. They said it could take a week."],
        L(w="Oh no, I'm so sorry. I really hope it comes back clear.",
          u="Not knowing is sometimes worse than the news itself, so every day of waiting must drag.",
          q="Did the doctor say what they think it might be?", n="Biopsies usually take about a week to come back."),
        ["They said it's probably nothing but they want to be sure. I keep checking my phone."],
        L(w="I'll be hoping for good news for you, this sounds so stressful.",
          u="Even with a probably-nothing, your mind goes straight to the worst case. That's normal.",
          q="Do you have someone to keep you company while you wait?", n="Doctors usually call quickly if it's urgent."),
        ["My sister is coming over tonight so I won't be alone."],
        L(w="I'm really glad she'll be with you, sending good thoughts.",
          q="That's good. Are you and your sister close?", n="Good idea to have some company tonight.")),
    _ed("lonely", "I moved to {city} for a new job and I don't know anyone here.",
        {"city": ["Chicago", "a small town up north", "Dallas", "Manchester"]},
        ["I moved to {city} three months ago and I still eat dinner alone every night.",
         "Since moving to {city} for work I haven't really talked to anyone outside the office."],
        L(w="That sounds really hard, I'm sorry you're going through it alone.",
          u="Starting over somewhere new can make even busy days feel empty.",
          q="Have you found anything in town that you enjoy doing yet?",
          n="It usually takes about a year to settle into a new city."),
        ["Not really. I go to work, come home, and watch TV. The weekends are the worst."],
        L(w="I really hope that changes soon, weekends like that are rough.",
          u="Weekends are when you notice it most, since there's no work to fill the time.",
          q="Are there any clubs or classes nearby that you'd be interested in?",
          n="A lot of cities have running clubs that meet on Saturday mornings."),
        ["Maybe I'll look into a climbing gym. I used to climb in college."],
        L(w="That's a great idea, I hope you meet some good people there!",
          u="Going back to something you loved might make the place feel more like home.",
          n="Climbing gyms are usually pretty social places.")),
    _ed("grateful", "My neighbor shoveled my whole driveway while I was sick with the flu.",
        {"who": ["neighbor", "neighbor across the street", "elderly neighbor"]},
        ["My {who} shoveled my entire driveway this morning without me even asking.",
         "I was stuck in bed with the flu and woke up to find my {who} had cleared all the snow."],
        L(w="Aw, that's so sweet of them, I love hearing stuff like that.",
          u="When you're sick, a small kindness like that probably feels enormous.",
          q="That's so kind! Did you get a chance to thank them?", n="That's nice. It snowed a lot this week."),
        ["I'm going to bake them some cookies once I feel better."],
        L(w="That's such a lovely way to say thank you, they'll be thrilled.",
          q="What kind of cookies are you going to make?", n="Cookies are a good thank you gift."),
        ["Probably oatmeal raisin, they mentioned once that it's their favorite."],
        L(w="That's so thoughtful of you, I hope you feel better soon!",
          u="Remembering their favorite shows you really appreciate them.",
          n="Oatmeal raisin is a classic choice.")),
    _ed("disappointed", "I made it to the final interview for a {job} position and they chose someone else.",
        {"job": ["marketing", "teaching", "design", "project manager"]},
        ["I just found out I didn't get the {job} job. I made it all the way to the final round.",
         "They called today to say they went with another candidate for the {job} role."],
        L(w="Oh no, I'm so sorry. That's such a letdown after getting that far.",
          u="Getting that close and then missing out must sting more than an early rejection.",
          q="Did they give you any feedback on why?", n="Final rounds usually have two or three people."),
        ["They said it was really close and they'd keep my resume on file."],
        L(w="Ugh, that's so frustrating, I'm sorry it didn't go your way.",
          u="Close is nice to hear, but I'm sure it doesn't make the disappointment go away.",
          q="Do you think you'll apply there again in the future?",
          n="Companies do sometimes call back people they kept on file."),
        ["I might. For now I'm just going to keep applying."],
        L(w="Good for you, I'm sure the right job is out there for you.",
          n="That's a reasonable plan, keep sending applications out.")),
    _ed("excited", "I'm going abroad for the first time next week, to {place}.",
        {"place": ["Japan", "Italy", "Mexico", "Iceland"]},
        ["I leave for {place} next week! It's my first time ever leaving the country.",
         "Next week I'm flying to {place}, my first trip abroad!"],
        L(w="That's so exciting, I'm thrilled for you!", u="Your first trip abroad is such a big milestone.",
          q="How fun! What are you most looking forward to?", n="Make sure your passport is up to date."),
        ["I think the food. I've been making a list of places to eat for months."],
        L(w="I love that, I'm so jealous of all the food you're going to try!",
          u="Planning for months probably makes the trip feel even more special.",
          q="Are you going by yourself or with friends?", n="Food is a big part of travel for most people."),
        ["With my cousin. We've been talking about this trip since we were kids."],
        L(w="That's amazing, I hope you two have the best time ever!",
          u="Doing it with someone you've dreamed about it with makes it even better.",
          n="Traveling with family can be easier.")),
    _ed("sad", "My old dog {name} passed away last night.", {"name": ["Daisy", "Lulu", "Rosie", "Bella", "Maple"]},
        ["My dog {name} died last night. She was fifteen.", "We lost {name} last night. She was fifteen and I've had her since I was ten."],
        L(w="Oh no, I'm so sorry for your loss. That's heartbreaking.",
          u="Fifteen years is most of a lifetime together, the house must feel so different.",
          q="I'm sorry. What was she like?", n="Fifteen is a long life for a dog."),
        ["She was the sweetest. She used to wait for me by the door every day after school."],
        L(w="That's such a sweet memory, I'm so sorry you lost her.",
          u="You'll probably keep looking at that door for a while, that's part of grieving.",
          q="Do you have any other pets at home?", n="Dogs are very loyal like that."),
        ["No, it's just us now. My mom says we might get another one someday."],
        L(w="I hope you find comfort in all the great years you had with her.",
          u="It makes sense not to be ready for that yet.",
          n="Lots of families wait a while before adopting again.")),
    _ed("angry", "My bank charged me {amount} in overdraft fees because of their own mistake.",
        {"amount": ["$70", "$105", "$140"]},
        ["My bank hit me with {amount} in overdraft fees and it was their mistake!",
         "I just got charged {amount} in overdraft fees because the bank posted a deposit late."],
        L(w="Ugh, that's infuriating, I'd be so mad too!",
          u="Paying for their mistake would make anyone feel cheated.",
          q="Have you called them about it yet?", n="Banks can usually reverse fees if you ask."),
        ["I was on hold for an hour and they said they'd look into it."],
        L(w="An hour on hold? That's awful, I'm sorry you had to deal with that.",
          u="Waiting an hour just to hear maybe is its own kind of insult.",
          q="Did they give you a date when they'd get back to you?",
          n="Ask for a reference number next time you call."),
        ["Within five business days. I'm going to switch banks if they don't fix it."],
        L(w="Good for you, I hope they fix it fast.",
          n="Credit unions often have lower fees.")),
    _ed("anxious", "My driving test is {when} and I failed the first time.",
        {"when": ["tomorrow morning", "on Friday"]},
        ["My driving test is {when} and I'm a nervous wreck. I failed the first time.",
         "I have my second driving test {when}. I failed the first one on parallel parking."],
        L(w="Aw, I'm rooting for you, you're going to do great!",
          u="Having failed once makes the second attempt feel like so much more pressure.",
          q="What part of the test are you most worried about?",
          n="Get a good night's sleep before the test."),
        ["Parallel parking. I practiced all weekend but I still hit the cone sometimes."],
        L(w="You've put in the work, I really hope it goes smoothly!",
          u="Practicing all weekend shows how much it means to you.",
          q="Are you practicing again before the test?",
          n="Examiners usually allow one adjustment when parking."),
        ["My dad is taking me out one more time tonight."],
        L(w="That's great, good luck tomorrow, I'll be thinking of you!",
          n="One more practice session can't hurt.")),
    _ed("sentimental", "I found a box of letters my grandmother wrote to my grandfather during the war.",
        {"where": ["attic", "basement", "garage"]},
        ["I was cleaning out the {where} and found letters my grandmother wrote to my grandfather.",
         "Found a box of old love letters from my grandparents in the {where} today."],
        L(w="Oh wow, what a beautiful thing to find, that gave me chills.",
          u="Reading their words must feel like getting to know them all over again.",
          q="How old are the letters?", n="Old letters should be kept away from sunlight."),
        ["Over seventy years. She wrote one almost every single day."],
        L(w="That's so romantic, I love that they kept every one.",
          u="Seeing how much they cared for each other must make you miss them.",
          q="Are you going to share them with the rest of your family?",
          n="You could have them scanned to keep copies."),
        ["I think I'll make copies for my mom and my aunts."],
        L(w="That's such a lovely idea, they're going to treasure them.",
          u="Passing them on keeps the story alive for everyone.",
          n="A local print shop can do that for you.")),
    _ed("embarrassed", "I accidentally called my {who} 'mom' in the middle of a meeting.",
        {"who": ["boss", "new manager", "team lead"]},
        ["I called my {who} mom during a meeting today. In front of everyone.",
         "In a meeting today I raised my hand and called my {who} mom."],
        L(w="Oh no, I'm cringing for you, that's so awkward!",
          u="Everyone's done something like that, but being in front of people makes it burn.",
          q="Oh no! How did everyone react?", n="That happens to a lot of people."),
        ["Everyone laughed, including her. I turned completely red."],
        L(w="Aw, at least she laughed, I hope you can laugh about it too!",
          u="Turning red is the worst part, but it sounds like nobody took it badly.",
          q="Did anyone bring it up after the meeting?",
          n="It's a common slip, kids do it with teachers all the time."),
        ["A coworker already made it her chat nickname. I'll never live it down."],
        L(w="Ha, that's hilarious, I'm sorry but that's really funny.",
          n="Office jokes usually fade after a week or two.")),
    _ed("nostalgic", "I ran into my childhood best friend {name} at the grocery store.",
        {"name": ["Kevin", "Priya", "Sam", "Jordan"]},
        ["I ran into {name}, my best friend from elementary school, at the store yesterday.",
         "Saw my childhood best friend {name} in the checkout line. We haven't talked in twenty years."],
        L(w="That's so cool, what a fun surprise!",
          u="Seeing someone from back then can bring a whole childhood back in a second.",
          q="Wow! Did you recognize each other right away?", n="Small towns are like that."),
        ["It took a second but then we both started laughing. We used to build forts in the woods."],
        L(w="I love that, it sounds like you had such a fun childhood together.",
          u="It sounds like those forts hold a lot of good memories for you.",
          q="Are you going to meet up again?", n="Lots of kids used to build forts like that."),
        ["We exchanged numbers and we're getting coffee next week."],
        L(w="That's wonderful, I hope you two reconnect!",
          n="Coffee is an easy way to catch up.")),
    _ed("guilty", "I completely forgot my {who}'s birthday yesterday.", {"who": ["mom", "dad", "best friend", "sister"]},
        ["I forgot my {who}'s birthday yesterday. I didn't even call.",
         "Yesterday was my {who}'s birthday and it totally slipped my mind."],
        L(w="Oh no, I'm sorry, that's such a sinking feeling.",
          u="You must feel awful, especially since it's someone who matters so much to you.",
          q="Have you talked to them since?", n="Set a calendar reminder so it doesn't happen again."),
        ["I called this morning and apologized. They said it's fine but I can tell they were hurt."],
        L(w="I'm sorry, I hope things feel better between you soon.",
          u="Hearing it's fine doesn't always make the guilt go away.",
          q="Is there something special you could do for them this week?",
          n="A late gift can still be a nice gesture."),
        ["I'm going to take them out to their favorite restaurant this weekend."],
        L(w="That's so sweet, I'm sure they'll really appreciate it.",
          n="That's a good way to make it up.")),
    _ed("jealous", "My {who} just bought a house and I'm still renting a tiny studio.",
        {"who": ["best friend", "younger brother", "coworker", "roommate from college"]},
        ["My {who} just closed on a house and I'm still stuck in my tiny studio.",
         "Found out my {who} bought a house. I can barely afford rent."],
        L(w="I'm sorry, that's a tough feeling to sit with.",
          u="It's hard to be happy for someone when it shines a light on what you want.",
          q="Are you hoping to buy a place yourself someday?", n="Housing prices are really high right now."),
        ["Yeah, but it feels impossible with my salary."],
        L(w="I really hope you get there, you deserve a place of your own.",
          u="When the numbers don't add up, it can feel like the goal keeps moving away.",
          q="Have you looked into first-time buyer programs?",
          n="Some cities have first-time buyer assistance."),
        ["Not yet. Maybe I should look into that."],
        L(u="Taking one small step might make it feel less impossible.",
          n="Your bank can usually tell you what you qualify for.")),
    _ed("terrified", "My son fell off his bike and hit his head, and we spent the night in the ER.",
        {"age": ["six", "eight", "ten"]},
        ["My {age} year old fell off his bike and hit his head. We were in the ER all night.",
         "Spent last night in the emergency room after my {age} year old crashed his bike."],
        L(w="Oh my gosh, that must have been so scary, I'm so sorry.",
          u="Seeing your kid hurt like that must have been absolutely terrifying.",
          q="Oh no, is your son okay now?", n="Kids fall off bikes a lot at that age."),
        ["He has a mild concussion but they said he'll be fine."],
        L(w="Oh thank goodness, I'm so relieved for you both.",
          u="You're probably still shaken even though the news is good.",
          q="Was he wearing a helmet?", n="Concussions usually need a few days of rest."),
        ["He was, thank god. The helmet is cracked right down the middle."],
        L(w="Wow, I'm so glad he had it on, give him a hug from me.",
          n="Make sure to replace the helmet before he rides again.")),
    _ed("hopeful", "I have a second interview on {day} for a job I really want.", {"day": ["Tuesday", "Friday"]},
        ["I got called back for a second interview on {day}!",
         "The company I really want to work for asked me back for a second interview on {day}."],
        L(w="That's great news, I'm so excited for you!",
          u="A callback means they really liked you, that must feel encouraging.",
          q="Congrats! What's the job you applied for?", n="Second interviews are usually with the team."),
        ["It's a research assistant position at the university. It would be my dream job."],
        L(w="Oh, I really hope you get it, that sounds perfect for you.",
          u="Being this close to a dream job must make it hard to think about anything else.",
          q="What are you doing to prepare?", n="University jobs often have good benefits."),
        ["I'm rereading all their recent papers so I can talk about them."],
        L(w="That's smart, I have a really good feeling about this!",
          n="Bring a few questions about their projects too.")),
    _ed("furious", "Someone backed into my car in the parking lot and drove off.",
        {"where": ["grocery store", "gym", "mall"]},
        ["Someone hit my car at the {where} and just drove away.",
         "Came out of the {where} to find my bumper smashed in and no note."],
        L(w="Are you serious? That's so infuriating, I'm sorry!",
          u="It's not just the damage, it's that they didn't even care enough to leave a note.",
          q="Ugh! Were there any cameras in the lot?", n="Check with the store about security footage."),
        ["The store said their cameras don't cover that part of the lot."],
        L(w="Ugh, that's the worst luck, I'd be fuming.",
          u="Feeling like there's no way to hold them accountable makes it even worse.",
          q="Are you going to file a police report?",
          n="Your insurance might cover it under uninsured motorist."),
        ["I filed one, but I doubt they'll find anyone."],
        L(w="I'm sorry, I really hope insurance takes care of it.",
          n="The report number will help with the insurance claim.")),
    _ed("content", "I spent a slow Sunday morning on the porch with coffee and a book.",
        {"book": ["a mystery novel", "an old favorite", "a cookbook"]},
        ["I spent this morning on the porch with coffee and {book}. It was perfect.",
         "Had the quietest Sunday morning, just me, some coffee and {book}."],
        L(w="That sounds so lovely, I'm happy you got that time.",
          u="Sometimes a quiet morning like that is exactly what the week needed.",
          q="Nice! What are you reading?", n="Sunday mornings are usually quiet."),
        ["It was the first weekend in months that I didn't have anything planned."],
        L(w="You deserve it, I hope you get more weekends like that!",
          u="When life is busy, a free weekend feels like such a gift.",
          q="What else did you end up doing with the day?", n="Empty weekends are rare for most people."),
        ["Took a nap, then made soup. Nothing exciting and I loved it."],
        L(w="Honestly that sounds like a dream day, I'm jealous!",
          n="Soup and a nap is a solid Sunday.")),
    _ed("devastated", "My {who} passed away yesterday after a long illness.",
        {"who": ["grandfather", "grandpa", "great-uncle"]},
        ["My {who} passed away yesterday. I can't believe he's gone.",
         "We lost my {who} yesterday morning. I was holding his hand."],
        L(w="I'm so, so sorry for your loss. My heart goes out to you.",
          u="Even when you know it's coming, losing someone that close turns everything upside down.",
          q="I'm so sorry. Were you two close?", n="Long illnesses are hard on the whole family."),
        ["He basically raised me. He taught me how to fish and how to fix things."],
        L(w="He sounds like a wonderful man, I'm so sorry you lost him.",
          u="It sounds like he's part of so much of who you are.",
          q="Do you have a favorite memory of fishing with him?",
          n="A lot of people learn those skills from grandparents."),
        ["We used to go to the lake every summer. I think I'll go there this year for him."],
        L(w="That's such a beautiful way to honor him, he'd love that.",
          u="Going back to that place might help you feel close to him again.")),
    _ed("impressed", "My coworker ran her first marathon at {age}.", {"age": ["55", "61", "48"]},
        ["My coworker just ran her first marathon, at {age}!", "A woman I work with finished a marathon this weekend at {age}."],
        L(w="That's incredible, good for her!", u="Starting something that hard later in life takes real determination.",
          q="Wow! How long did she train for it?", n="A lot of people start running later in life."),
        ["She said she couldn't even run a mile a year ago."],
        L(w="That's so inspiring, I love hearing that.",
          u="Going from no mile to a marathon in a year must have taken so much discipline.",
          q="Is she planning to run another one?", n="Most training plans take about six months."),
        ["She's already signed up for the next one in spring."],
        L(w="That's amazing, she sounds like a total powerhouse!",
          q="That's great! Has she inspired you to start running too?",
          n="Spring races fill up quickly.")),
    _ed("surprised", "My family threw me a surprise party for my {age}th birthday.", {"age": ["30", "40", "25", "50"]},
        ["I walked into my parents' house and forty people yelled surprise for my {age}th!",
         "My family threw me a surprise party for my {age}th and I had no idea."],
        L(w="That's so fun, what a great family you have!",
          u="Pulling that off without you noticing means they really care.",
          q="Ha, no way! Did you really not suspect anything?", n="Surprise parties are hard to plan."),
        ["Not at all. My sister told me we were just going over for dinner."],
        L(w="Aw, that's the best, I love that she pulled it off.",
          u="Being totally caught off guard must have made it even more special.",
          q="Were there people there you hadn't seen in a while?", n="Dinner is a classic cover story."),
        ["My college roommate flew in from Oregon. I actually cried."],
        L(w="That's so sweet, happy birthday!",
          u="Seeing someone who traveled that far for you would make anyone cry.")),
    _ed("apprehensive", "I'm moving in with my {partner} next month and I'm nervous about it.",
        {"partner": ["girlfriend", "boyfriend", "partner"]},
        ["My {partner} and I are moving in together next month. I'm excited but nervous.",
         "We signed a lease together last week. My {partner} is great but I've never lived with anyone."],
        L(w="Aw, congrats! I hope it goes really well for you both.",
          u="Being excited and nervous at the same time makes sense for such a big step.",
          q="What part are you most nervous about?", n="Most couples argue about chores at first."),
        ["Mostly losing my alone time. I really need quiet to recharge."],
        L(w="I hope you find a good rhythm, you deserve your quiet time.",
          u="If you're someone who recharges alone, sharing a space can feel like a lot.",
          q="Have you talked to them about needing that time?",
          n="Having a separate room for one of you can help."),
        ["A little. I think I'll bring it up again before we move."],
        L(u="Talking early probably makes it feel less scary for both of you.",
          n="Setting expectations before the move is a good idea.")),
    _ed("caring", "My sister has pneumonia, so I'm watching her kids this week.", {"n": ["two", "three"]},
        ["My sister is sick with pneumonia so I'm taking care of her {n} kids this week.",
         "I'm watching my sister's {n} kids while she recovers from pneumonia."],
        L(w="That's so kind of you, I hope she feels better soon.",
          u="She must be so relieved to have you, being sick with kids is so hard.",
          q="Oh no, how is your sister doing?", n="Pneumonia usually takes a couple of weeks to clear."),
        ["She's resting a lot. The kids miss her but they're being pretty good."],
        L(w="Aw, that's good to hear, you're a great sibling.",
          u="Kids can tell when something's off, so keeping things calm really helps them.",
          q="What have you been doing to keep them busy?", n="Kids do well with a normal routine."),
        ["Lots of board games and pancakes. I'm exhausted but it's worth it."],
        L(w="You're doing an amazing job, I hope you get some rest soon.",
          n="Pancakes are an easy win with kids.")),
    _ed("confident", "I studied for weeks and I feel ready for my {exam} exam tomorrow.",
        {"exam": ["bar", "nursing board", "accounting", "final history"]},
        ["My {exam} exam is tomorrow and honestly I feel ready.",
         "I've studied every day for six weeks and I'm walking into the {exam} exam feeling good."],
        L(w="That's awesome, I'm rooting for you!", u="All that studying shows, it's a great feeling to feel prepared.",
          q="That's great! How long have you been preparing?", n="Get a good night's sleep before the exam."),
        ["About two months. I did every practice test I could find."],
        L(w="You've got this, I'm excited for you!",
          u="Doing every practice test means nothing should surprise you tomorrow.",
          q="What are you going to do to celebrate when it's over?", n="Practice tests are the best way to prepare."),
        ["Sleep for a whole day, probably."],
        L(w="Ha, you deserve it, good luck tomorrow!", n="Rest is a good reward after an exam.")),
    _ed("annoyed", "My upstairs neighbors stomp around until {time} every night.", {"time": ["2am", "1am", "3am"]},
        ["My upstairs neighbors stomp around until {time} every single night.",
         "I haven't slept well in weeks because the people upstairs are loud until {time}."],
        L(w="Ugh, that's so annoying, I'm sorry you're dealing with that.",
          u="Losing sleep night after night would wear anyone down.",
          q="Have you talked to them about it?", n="Earplugs or a white noise machine can help."),
        ["I left a polite note. Nothing changed."],
        L(w="That's so frustrating, you deserve to get some sleep.",
          u="Trying the nice way and getting ignored makes it even more irritating.",
          q="Is there a landlord you could talk to?", n="Most leases have a quiet hours rule."),
        ["I'm emailing the landlord tomorrow."],
        L(w="Good, I really hope that sorts it out for you.", n="Keep a log of the dates and times.")),
    _ed("joyful", "My {partner} proposed to me on the beach at sunset.", {"partner": ["boyfriend", "girlfriend", "partner"]},
        ["My {partner} proposed last night on the beach at sunset!", "I'm engaged! My {partner} proposed at sunset on the beach."],
        L(w="Oh my gosh, congratulations! I'm so happy for you!", u="That sounds like the moment you'll remember forever.",
          q="Congratulations! Did you have any idea it was coming?", n="Beach proposals are very popular."),
        ["None at all! We were both so nervous that the ring fell in the sand."],
        L(w="Ha, that's adorable, I love that so much!",
          u="Being that nervous shows how much it meant to both of you.",
          q="Did you find it right away?", n="That happens more often than you'd think."),
        ["After a few panicked seconds, yes. We laughed the whole way home."],
        L(w="What a perfect story, congrats again to you both!",
          n="That'll make a good story at the wedding.")),
    _ed("trusting", "I gave my friend my house keys to watch my place while I travel.", {"weeks": ["two", "three"]},
        ["I'm leaving my friend my house keys while I'm away for {weeks} weeks.",
         "My friend is house-sitting for {weeks} weeks while I'm overseas."],
        L(w="It's so nice to have a friend like that!", u="It must feel good to have someone you trust that much.",
          q="How long have you two been friends?", n="House-sitting is a good way to save money on pet care."),
        ["Since high school. I'd trust her with anything."],
        L(w="That's wonderful, friendships like that are so special.",
          u="After that long, it makes sense you don't even think twice.",
          q="Is she watching any pets for you too?", n="Leave her a list of emergency contacts."),
        ["Yes, my two cats. They love her more than me."],
        L(w="Ha, that's so cute, enjoy your trip!", n="Cats are usually fine with a daily visit.")),
    _ed("disgusted", "I found something growing in the office fridge that had been there for months.",
        {"thing": ["a container of soup", "a salad", "a tub of yogurt"]},
        ["Someone left {thing} in the office fridge for months and it's growing fur.",
         "I opened the work fridge and found {thing} that had turned green."],
        L(w="Ew, that's so gross, I'm sorry you had to see that!",
          u="Opening the fridge and getting hit with that must have ruined your appetite.",
          q="Gross! Does anyone know whose it is?", n="Offices should clean the fridge every Friday."),
        ["Nobody will admit it. I had to throw it out with a paper towel over my face."],
        L(w="That's disgusting, you're a hero for dealing with it.",
          u="Being the one stuck cleaning up after someone else makes it even worse.",
          q="Are you going to put up a sign?", n="A weekly cleanout rule usually fixes this."),
        ["I already did. In all caps."],
        L(w="Ha, good for you, I hope it works!", n="Signs work best with a clear cleanout day.")),
    _ed("prepared", "A storm is coming and we've already stocked up on supplies.", {"storm": ["hurricane", "blizzard", "big storm"]},
        ["There's a {storm} coming this weekend, but we're ready. We stocked up on everything.",
         "With the {storm} coming we spent yesterday getting water, batteries and food."],
        L(w="That's great, I hope you all stay safe!", u="It must feel good to be ahead of it instead of scrambling.",
          q="Good thinking! Do you have a generator?", n="Stores usually run out of water first."),
        ["We do, we bought one after the last storm knocked the power out for a week."],
        L(w="Smart move, I'm glad you're set this time.",
          u="After going a week without power, being ready must be a big relief.",
          q="Are you planning to stay home for it?", n="Generators need to run outside for safety."),
        ["Yes, unless they tell us to evacuate."],
        L(w="Stay safe out there, I'll be thinking of you.", n="Keep a bag packed just in case.")),
    _ed("anticipating", "My sister is coming home from {place} after two years away.",
        {"place": ["Australia", "Korea", "Germany", "Brazil"]},
        ["My sister is coming home next week after two years in {place}!",
         "Counting down the days until my sister flies back from {place}."],
        L(w="That's so exciting, you must be thrilled!",
          u="Two years is a long time, the wait this last week must feel endless.",
          q="Aw! What was she doing over there?", n="Long flights from there can be exhausting."),
        ["Teaching English. We've only talked on video calls the whole time."],
        L(w="I'm so happy for you, that first hug is going to be amazing.",
          u="Video calls help, but they're nothing like having her in the same room.",
          q="Do you have anything planned for when she gets back?", n="Teaching abroad is popular after college."),
        ["We're having a big barbecue with the whole family."],
        L(w="That sounds perfect, enjoy every minute with her!", n="Barbecues are great for big groups.")),
    _ed("ashamed", "I borrowed money from a friend months ago and still haven't paid it back.", {"amount": ["$300", "$500", "$200"]},
        ["I borrowed {amount} from a friend in the spring and I still haven't paid her back.",
         "I owe my friend {amount} and I've been avoiding her because I can't pay it yet."],
        L(w="Oh, that's a tough spot, I'm sorry.",
          u="Avoiding her probably feels worse than the debt itself at this point.",
          q="Does she know why you haven't paid it back yet?", n="A small payment plan can help."),
        ["No. I've been too embarrassed to bring it up."],
        L(w="I hope you can talk to her, I bet she'll understand.",
          u="Shame makes it so hard to start that conversation.",
          q="Do you think you could pay a little at a time?", n="Even ten dollars a week adds up."),
        ["Maybe. I'll text her tonight and be honest."],
        L(u="Being honest will probably take a lot of the weight off.", n="Honesty is usually the best approach here.")),
    _ed("faithful", "My partner and I made it through two years of long distance.", {"place": ["Spain", "Canada", "Kenya"]},
        ["My partner and I just finished two years of long distance while he worked in {place}.",
         "Two years of long distance with my partner in {place} and we made it."],
        L(w="That's amazing, I'm so happy for you two!",
          u="Making it through two years apart shows how strong your relationship is.",
          q="Wow, how did you two make it work?", n="Long distance is hard for a lot of couples."),
        ["Lots of late night calls and a shared playlist we kept adding to."],
        L(w="That's so sweet, I love the playlist idea!",
          u="Little rituals like that must have made the distance feel smaller.",
          q="What's the first thing you did together when he got back?", n="Time zones make calls difficult."),
        ["We went to the diner where we had our first date."],
        L(w="That's so romantic, congrats to both of you.", n="Diners are a classic first date spot.")),
    _ed("afraid", "I heard noises downstairs at 3am and I was home alone.", {"noise": ["footsteps", "a loud bang", "the door handle"]},
        ["I heard {noise} downstairs at 3am last night and I was home alone.",
         "Woke up at 3am to {noise} downstairs. Nobody else was home."],
        L(w="Oh no, that sounds so scary, I'm glad you're okay.",
          u="Being alone when that happens makes every sound ten times louder.",
          q="That's terrifying! What did you do?", n="Old houses make a lot of noise at night."),
        ["I called the police. It turned out to be my cat knocking things over."],
        L(w="Oh thank goodness, I'm so glad it was just the cat!",
          u="You probably felt relieved and a little silly at the same time.",
          q="Were the police nice about it?", n="Cats are most active at night."),
        ["They were great. One of them said it happens all the time."],
        L(w="That's good, I'm glad you called anyway.", n="Calling was the right thing to do.")),
    _ed("lonely", "My youngest just left for college and the house is empty.", {"n": ["three", "two", "four"]},
        ["We dropped our youngest off at college yesterday. After {n} kids, the house is silent.",
         "Our last kid moved into the dorms this weekend. The house has never been this quiet."],
        L(w="Aw, I'm sorry, that must be such a bittersweet time.",
          u="After years of a busy house, the quiet must feel really strange.",
          q="How are you and your partner adjusting?", n="Many parents feel that way at first."),
        ["My husband is fine but I keep going into her room."],
        L(w="That's so understandable, I hope it gets easier for you.",
          u="Her room is probably the place where you still feel close to her.",
          q="Do you get to talk to her often?", n="Some parents turn the room into an office."),
        ["We text every day. She seems happy, which helps."],
        L(w="I'm glad she's doing well, that must be comforting.", n="Daily texts are pretty common in the first year.")),
    _ed("proud", "I ran my first 5K after starting from the couch three months ago.", {"time": ["34 minutes", "41 minutes", "29 minutes"]},
        ["I ran my first 5K this morning! Three months ago I couldn't run to the mailbox.",
         "Finished my first 5K today in {time}. I started training in the spring."],
        L(w="That's awesome, congratulations, you should be so proud!",
          u="Going from the couch to a race in three months takes real commitment.",
          q="Congrats! How did you feel when you crossed the finish line?", n="A lot of people use couch to 5K apps."),
        ["I cried a little. My kids were waiting at the finish line."],
        L(w="Aw, that gave me goosebumps, what a moment!",
          u="Having your kids there must have made it mean even more.",
          q="Are you going to sign up for another one?", n="Finish lines are good spots for photos."),
        ["Already did. A 10K in the fall."],
        L(w="That's fantastic, you're going to crush it!", n="Fall races usually have cooler weather.")),
    _ed("sad", "My best friend is moving across the country for her husband's job.", {"place": ["California", "Florida", "Vancouver"]},
        ["My best friend is moving to {place} next month.",
         "Found out my best friend is moving to {place} for her husband's job."],
        L(w="Aw, I'm sorry, that's really hard news.",
          u="Losing your best friend to distance can feel like a kind of grief.",
          q="How long have you two been friends?", n="Video calls make long distance easier."),
        ["Since we were twelve. We've never lived more than ten minutes apart."],
        L(w="That's so sad, I'm sorry you'll have to miss her.",
          u="After that many years nearby, it must be hard to imagine life without her close.",
          q="Are you planning to visit her?", n="Flights are cheaper if you book early."),
        ["I'm going to visit in the spring. We already picked the dates."],
        L(w="That's great, I hope that makes the goodbye a little easier.",
          u="Having a date to look forward to probably helps a lot.")),
    _ed("grateful", "A nurse stayed late to sit with me after my surgery.", {"surgery": ["knee surgery", "appendix surgery", "back surgery"]},
        ["After my {surgery}, a nurse stayed past her shift to sit with me.",
         "I was really scared after my {surgery} and one nurse stayed late just to keep me company."],
        L(w="That's so kind, nurses like that are angels.",
          u="When you're scared and in pain, someone staying with you means everything.",
          q="What a sweet thing to do. Did you get her name?", n="Nurses often work long shifts."),
        ["Her name was Maria. I want to send the hospital a letter about her."],
        L(w="That's such a lovely idea, I'm sure it'll mean a lot to her.",
          u="It sounds like she made a scary night feel a lot less lonely.",
          q="How are you feeling now?", n="Hospitals usually pass those letters along."),
        ["Much better. Walking a little more every day."],
        L(w="I'm so glad, wishing you a speedy recovery!", n="Walking helps recovery after surgery.")),
    _ed("disappointed", "My dad missed my {event} again because of work.", {"event": ["piano recital", "soccer final", "school play"]},
        ["My dad missed my {event} tonight. Again. Work came first like always.",
         "I looked for my dad in the crowd at my {event} but his seat was empty."],
        L(w="I'm so sorry, that really hurts.",
          u="Looking for him and seeing an empty seat must have been so disappointing.",
          q="Did he say why he couldn't make it?", n="Some jobs have really unpredictable hours."),
        ["He said there was an emergency at work. There always is."],
        L(w="That's so unfair to you, I'm sorry.",
          u="When it keeps happening, the excuses stop meaning much.",
          q="Have you told him how it makes you feel?", n="Maybe ask him to put the next one on his calendar."),
        ["Not really. I don't want to start a fight."],
        L(u="It makes sense you'd want to avoid a fight, but your feelings matter too.",
          n="A calm talk on a quiet day might go better.")),
    _ed("excited", "We're adopting a puppy this weekend.", {"breed": ["golden retriever", "beagle", "rescue mutt", "corgi"]},
        ["We're picking up our new {breed} puppy on Saturday!",
         "This weekend we're finally bringing home a {breed} puppy."],
        L(w="Oh my gosh, that's so exciting, puppies are the best!",
          u="Sounds like you've been waiting a long time for this.",
          q="Yay! Have you picked a name yet?", n="Puppies need a lot of training at first."),
        ["We're thinking Waffles. The kids picked it."],
        L(w="Waffles is the cutest name ever, I love it!",
          u="Letting the kids choose makes it feel like the whole family's dog.",
          q="Is the house ready for a puppy?", n="Short names are easier for dogs to learn."),
        ["We bought a crate and way too many toys."],
        L(w="Ha, there's no such thing as too many, enjoy!", n="Crate training works well for most puppies.")),
    _ed("anxious", "My hours at work got cut and rent is due in {days} days.", {"days": ["ten", "five", "twelve"]},
        ["My hours got cut in half and rent is due in {days} days.",
         "Work cut my shifts and I don't know how I'm paying rent in {days} days."],
        L(w="Oh no, that's so stressful, I'm sorry.",
          u="Having rent hanging over you with less coming in must keep you up at night.",
          q="Have you talked to your landlord yet?", n="Some landlords accept partial payments."),
        ["Not yet. I'm scared they'll start eviction right away."],
        L(w="I really hope it works out, that's a scary place to be.",
          u="That fear makes sense, it's hard to ask when so much is on the line.",
          q="Do you have anyone who could help you out for a month?",
          n="Local charities sometimes offer one-time rent help."),
        ["My brother said he might be able to lend me some."],
        L(w="That's a relief, I'm glad you have him.", n="Put the loan terms in writing to keep it simple.")),
    _ed("angry", "My coworker presented my project as his own to the whole department.", {"n": ["three", "six", "two"]},
        ["My coworker presented my project to the department like it was his idea.",
         "I spent {n} months on a project and my coworker took all the credit in a meeting."],
        L(w="What? That's so infuriating, I'm sorry!",
          u="Watching someone take credit for months of your work must have been maddening.",
          q="Did anyone in the meeting know it was yours?", n="Keep records of your work just in case."),
        ["My manager knew, but she didn't say anything."],
        L(w="Ugh, that makes it even worse, I'd be so angry.",
          u="Her staying quiet probably felt like a second betrayal.",
          q="Are you going to talk to her about it?", n="Ask for a one-on-one with your manager."),
        ["I have a meeting with her on Monday."],
        L(w="Good, I hope she sets things right for you.", n="Bring the emails and drafts with you.")),
    _ed("nostalgic", "I drove past my old high school for the first time in fifteen years.", {"years": ["fifteen", "ten", "twenty"]},
        ["I drove past my old high school today for the first time in {years} years.",
         "Went back to my hometown and drove by my high school. It's been {years} years."],
        L(w="Aw, that must have been such a fun trip down memory lane.",
          u="Seeing it again probably brought back a flood of memories.",
          q="Oh wow, had it changed much?", n="A lot of schools have been renovated lately."),
        ["They tore down the old gym. That's where I had my first dance."],
        L(w="Oh no, that's a little sad, I'm sorry it's gone.",
          u="Losing a place tied to a memory like that can feel like losing a piece of it.",
          q="Do you still keep in touch with anyone from back then?", n="Older gyms are expensive to maintain."),
        ["A couple of people. Maybe I'll send them a picture."],
        L(w="That's a great idea, I bet they'd love it.", n="Old classmates usually enjoy that kind of thing.")),
    _ed("embarrassed", "I tripped and fell on stage while accepting an award at school.", {"award": ["science award", "art prize", "attendance award"]},
        ["I tripped on the stairs walking up to get my {award} in front of the whole school.",
         "Fell flat on my face on stage while accepting my {award}."],
        L(w="Oh no, I'm cringing for you, are you okay?",
          u="Falling in front of everyone when you're supposed to be celebrated must have been awful.",
          q="Oh no! Did you get hurt?", n="Stage stairs are often poorly lit."),
        ["Just my pride. Everyone clapped even louder when I got up."],
        L(w="Aw, that's so sweet of them, I'm glad you're okay.",
          u="The louder clapping probably meant they were on your side.",
          q="Did your friends tease you about it after?", n="Audiences usually respond that way."),
        ["A little, but I still got the award."],
        L(w="That's the most important part, congrats!", n="The award is what people will remember.")),
    _ed("guilty", "I left my dog outside in the rain by accident while I was at the store.", {"hours": ["an hour", "two hours"]},
        ["I accidentally left my dog outside in the rain for {hours} while I ran errands.",
         "Came home to find my dog soaked on the porch. I forgot to let him in before I left."],
        L(w="Oh no, poor pup, I'm sorry, that's a horrible feeling.",
          u="Seeing him wet and waiting probably made you feel awful.",
          q="Oh no, is he okay now?", n="Dogs handle rain better than people think."),
        ["He's fine, he's curled up on the couch now, but I still feel terrible."],
        L(w="I'm glad he's okay, give him some extra treats.",
          u="The guilt makes sense, it just shows how much you love him.",
          q="Was he happy to see you?", n="A towel and a warm spot is all he needs."),
        ["He wagged like nothing happened. Dogs are too forgiving."],
        L(w="They really are, he clearly loves you!", n="Dogs usually forget things like that fast.")),
    _ed("hopeful", "My dad is starting a new treatment that might finally work.", {"illness": ["his cancer", "his heart condition", "his arthritis"]},
        ["My dad starts a new treatment for {illness} next week. The doctors are optimistic.",
         "After years of trying things, my dad is starting a new treatment for {illness}."],
        L(w="Oh, I really hope it works for him!",
          u="After so long, finally having something hopeful must feel like a big weight lifting.",
          q="That's great news. How is he feeling about it?", n="New treatments often take a few weeks to show results."),
        ["He's nervous but trying to stay positive."],
        L(w="I'll be keeping him in my thoughts, sending good vibes.",
          u="It makes sense to be hopeful and scared at the same time.",
          q="Will you be going with him to the appointments?", n="Bring a notebook to write down what the doctors say."),
        ["I'm driving him to the first one."],
        L(w="That's so good of you, I hope it goes well.", n="First appointments usually take a while.")),
    _ed("surprised", "I found a {amount} dollar bill in an old winter jacket.", {"amount": ["fifty", "twenty", "hundred"]},
        ["I just found a {amount} dollar bill in the pocket of an old winter coat!",
         "Pulled out my winter jacket today and there was a {amount} dollar bill in the pocket."],
        L(w="Ha, that's the best feeling ever!", u="Finding money you forgot about feels like a gift from past you.",
          q="Nice! What are you going to spend it on?", n="That happens a lot at the start of winter."),
        ["I think I'll treat myself to a nice dinner."],
        L(w="You totally deserve it, enjoy every bite!", u="Spending it on something fun makes the surprise even better.",
          q="Where are you thinking of going?", n="Dinner is a good way to spend it."),
        ["There's a new Thai place near my apartment."],
        L(w="That sounds delicious, have fun!", n="Thai food is usually pretty affordable.")),
    _ed("content", "Our whole family had dinner together for the first time in a year.", {"meal": ["lasagna", "tacos", "a roast"]},
        ["Everyone made it to family dinner tonight for the first time in a year. We had {meal}.",
         "First time in a year that we all sat down together, just {meal} and a lot of talking."],
        L(w="That sounds so lovely, I'm really happy for you.",
          u="Getting everyone around one table after a year must have felt really good.",
          q="That's great! What made it so hard to get together before?", n="Big family dinners are hard to plan."),
        ["Everyone's been busy with work and school. It was nice to just talk."],
        L(w="Those are the best nights, I'm glad you had it.",
          u="It sounds like you didn't realize how much you missed it until you were all there.",
          q="Are you going to make it a regular thing?", n="Some families pick one Sunday a month."),
        ["We said once a month from now on."],
        L(w="That's wonderful, I hope you keep it going!", n="Once a month is easy to stick to.")),
    _ed("terrified", "We hit terrible turbulence on a flight and the oxygen masks almost came down.", {"route": ["to Denver", "home from Chicago", "over the Rockies"]},
        ["We hit the worst turbulence of my life on a flight {route}.",
         "The plane dropped so hard on my flight {route} that people screamed."],
        L(w="Oh my gosh, that sounds so scary, I'm glad you're safe!",
          u="Not being able to do anything while the plane shakes must be terrifying.",
          q="Oh no! How long did it last?", n="Turbulence is very rarely dangerous."),
        ["Maybe ten minutes, but it felt like an hour. A flight attendant fell."],
        L(w="That's awful, I hope she was okay.",
          u="Seeing the crew get hurt would make anyone think the worst.",
          q="Are you nervous about flying again?", n="Keeping your seatbelt on helps in turbulence."),
        ["A little. I have another flight next month."],
        L(w="I hope that one is smooth sailing for you.", n="Morning flights tend to be smoother.")),
    _ed("jealous", "My {partner} spends a lot of time texting a coworker.", {"partner": ["boyfriend", "girlfriend", "husband", "wife"]},
        ["My {partner} texts a coworker constantly and it's starting to bother me.",
         "Every night my {partner} is laughing at texts from the same coworker."],
        L(w="Aw, that's a tough feeling, I'm sorry.",
          u="It's hard not to wonder when someone else seems to get that much attention.",
          q="Have you told them it bothers you?", n="A lot of people are close with coworkers."),
        ["Not yet. I don't want to seem insecure."],
        L(w="I hope you can talk about it, your feelings are valid.",
          u="Worrying about looking insecure can keep you quiet even when something feels off.",
          q="Is there something specific that worries you about it?", n="Bringing it up calmly is usually fine."),
        ["Maybe I'll mention it this weekend when we're both relaxed."],
        L(u="Picking a calm moment will probably make it easier for both of you.",
          n="Weekends are usually a better time for those talks.")),
    _ed("devastated", "The {shop} I ran for eight years had to close for good.", {"shop": ["bakery", "bookstore", "cafe"]},
        ["Today was the last day of the {shop} I've run for eight years.",
         "I had to close my {shop} for good. Eight years of my life."],
        L(w="I'm so sorry, that's heartbreaking.",
          u="Closing something you built for eight years must feel like losing part of yourself.",
          q="Oh no, I'm sorry. What happened?", n="Small businesses have had a very hard few years."),
        ["Rent went up and we just couldn't keep up with it."],
        L(w="That's so unfair, I'm sorry you had to go through this.",
          u="Losing it to rent rather than lack of customers must make it sting even more.",
          q="Do you know what you want to do next?", n="Rent increases have closed a lot of shops."),
        ["Not yet. I think I need some time off first."],
        L(w="You deserve the rest, I'm sending you strength.", u="Taking time to grieve it first makes a lot of sense.")),
    _ed("impressed", "My {age} year old brother fixed my car by himself.", {"age": ["fourteen", "sixteen", "fifteen"]},
        ["My {age} year old brother fixed my car's brakes by watching videos.",
         "My little brother, who is {age}, figured out what was wrong with my car and fixed it."],
        L(w="Wow, that's amazing, what a smart kid!", u="That's a lot of patience and skill for someone so young.",
          q="No way! How did he learn to do that?", n="There are a lot of repair videos online."),
        ["He's been taking apart engines since he was ten."],
        L(w="That's so cool, you must be so proud of him.",
          u="It sounds like he's found something he really loves.",
          q="Does he want to be a mechanic when he grows up?", n="Some high schools have auto shop classes."),
        ["He wants to be an engineer. He'd be great at it."],
        L(w="I bet he will, that's awesome!", n="Engineering is a good fit for people like that.")),
    _ed("sentimental", "I found a photo of my late cat as a kitten.", {"name": ["Whiskers", "Tiger", "Luna"]},
        ["I found a photo of {name} as a tiny kitten today. She passed last year.",
         "Cleaning my phone I came across a kitten picture of {name}. I miss her."],
        L(w="Aw, that's so sweet and sad at the same time.",
          u="Finding that photo out of nowhere must have brought a lot back.",
          q="How old was she when she passed?", n="Old photos come up a lot when you clean your phone."),
        ["Seventeen. She slept on my pillow every night."],
        L(w="She sounds like she was so loved, I'm sorry you miss her.",
          u="Seventeen years of that, no wonder the photo hit you.",
          q="Are you going to print the photo?", n="Seventeen is a great age for a cat."),
        ["I think I'll frame it for my desk."],
        L(w="That's such a lovely way to remember her.", n="A small frame would work well on a desk.")),
    _ed("apprehensive", "I start physical therapy tomorrow after my knee surgery.", {"weeks": ["six", "eight"]},
        ["I start physical therapy tomorrow and I've heard it's painful.",
         "Tomorrow is my first physical therapy session after knee surgery. I'm dreading it."],
        L(w="Oh, I hope it goes okay, you've got this.",
          u="Not knowing how much it'll hurt makes it hard to go in with a clear head.",
          q="How long have you been recovering?", n="Physical therapy usually gets easier after a few weeks."),
        ["About {weeks} weeks. I just want to walk normally again."],
        L(w="I really hope you're back on your feet soon.",
          u="After {weeks} weeks, you must be so tired of not moving freely.",
          q="Do you have someone to drive you there?", n="Most people walk normally within a few months."),
        ["My neighbor is taking me."],
        L(w="That's so kind of them, good luck tomorrow!", n="Bring comfortable clothes that fit over the brace.")),
    _ed("caring", "I brought soup to my friend after her breakup.", {"soup": ["chicken noodle", "tomato", "lentil"]},
        ["I brought my friend some {soup} soup tonight. Her boyfriend broke up with her yesterday.",
         "My friend got dumped yesterday so I showed up with {soup} soup and ice cream."],
        L(w="Aw, you're such a good friend, that's so sweet.",
          u="Showing up like that probably meant more to her than anything you could say.",
          q="That's so kind. How is she doing?", n="Soup is a classic comfort food."),
        ["She cried a lot but we ended up watching movies and laughing."],
        L(w="I'm so glad she has you, that's lovely.",
          u="Sometimes a night of laughing is exactly what someone needs after crying.",
          q="Were they together a long time?", n="Comedies are a good pick after a breakup."),
        ["Three years. It's going to take her a while."],
        L(w="She's lucky to have you around while she heals.", n="The first few weeks are usually the hardest.")),
    _ed("confident", "I asked for a raise at work and I know I've earned it.", {"pct": ["ten", "eight", "fifteen"]},
        ["I'm asking my boss for a {pct} percent raise tomorrow. I've earned it.",
         "Tomorrow I'm going in to ask for a raise, and I have a list of everything I've done this year."],
        L(w="Go get it, I'm cheering you on!", u="Having your accomplishments written down must make you feel ready.",
          q="Awesome! What are you going to say?", n="Raises are usually decided around budget season."),
        ["I'm going to show her the two big projects I led this year."],
        L(w="That's great, I'm sure you'll do amazing.",
          u="Leading two big projects is strong proof, no wonder you feel confident.",
          q="What will you do if she says no?", n="Numbers and results make the strongest case."),
        ["Ask what I'd need to do to get there by summer."],
        L(w="Smart plan, good luck tomorrow!", n="That's a good fallback question.")),
    _ed("joyful", "My baby niece took her first steps while I was babysitting.", {"months": ["eleven", "ten", "thirteen"]},
        ["My {months} month old niece took her first steps while I was babysitting today!",
         "I got to see my niece take her very first steps today. She's {months} months old."],
        L(w="Oh my gosh, that's adorable, what a special moment!",
          u="Getting to be the one who sees that must have felt like such a gift.",
          q="Aw! Did you get it on video?", n="Most babies start walking around a year."),
        ["I did! I sent it to my sister right away and she cried."],
        L(w="That's so sweet, I'm so happy for all of you.",
          u="It's lovely that you could share that moment with her even though she wasn't there.",
          q="How many steps did she take?", n="Parents love getting videos like that."),
        ["Three wobbly steps and then she sat down and laughed."],
        L(w="That's the cutest thing I've heard all week!", n="That's pretty typical for first steps.")),
    _ed("annoyed", "My flight got delayed six hours and I missed my connection.", {"city": ["Atlanta", "Denver", "Frankfurt"]},
        ["My flight got delayed six hours and now I'm stuck in {city} overnight.",
         "Missed my connection because of a six hour delay. Sleeping in the {city} airport."],
        L(w="Ugh, that's the worst, I'm sorry!", u="Being stuck somewhere you didn't plan to be is so frustrating.",
          q="Oh no, did the airline give you a hotel?", n="Airlines usually rebook you on the next flight."),
        ["They gave me a meal voucher for twelve dollars. That's it."],
        L(w="Twelve dollars? That's ridiculous, I'd be so irritated.",
          u="A tiny voucher after a six hour delay feels almost insulting.",
          q="When is your new flight?", n="You can sometimes file for compensation afterwards."),
        ["Six in the morning. I guess I'll just stay up."],
        L(w="Hang in there, I hope the rest of your trip goes smoothly.", n="Some airports have quiet zones for sleeping.")),
    _ed("ashamed", "I snapped at my partner over nothing because I was stressed.", {"thing": ["dishes", "being late", "the TV volume"]},
        ["I yelled at my partner about the {thing} last night and it wasn't even a big deal.",
         "I was so stressed from work that I snapped at my partner over the {thing}."],
        L(w="Oh no, that's a rough feeling, I'm sorry.",
          u="When you're stressed, small things can set you off before you even realize it.",
          q="Have you two talked since?", n="Stress affects how people react to small things."),
        ["I apologized this morning. They were nice about it but I still feel bad."],
        L(w="I'm glad you made up, try not to be too hard on yourself.",
          u="Feeling bad afterward shows you care about how you treat them.",
          q="Is work going to calm down soon?", n="A sincere apology usually goes a long way."),
        ["It should after this project ends next week."],
        L(w="I hope you get a break soon, you sound like you need it.", n="Plan something relaxing for after the deadline.")),
]

# ==================================================================================================
# Large EmpatheticDialogues-format corpus (empathetic_dialogues_large/): enough conversations to train
# a small model from scratch. Speaker turns reuse the EPITOME situations; cue sentences below make the
# empathy level of the listener's reply depend partly on the speaker's turn, one cue per mechanism:
#   ER (warmth) follows the intensity:        high -> strong, none -> weak, low -> no
#   IP (understanding) follows how the speaker names the feeling: named -> strong, vague -> weak, none -> no
#   EX (questions) follows the invitation:    "there's more" -> strong, none -> weak, asks for advice -> no
# ==================================================================================================

LARGE_CUE_LEVEL = {"er": {"high": 2, "none": 1, "low": 0}, "ip": {"named": 2, "vague": 1, "none": 0},
                   "ex": {"more": 2, "none": 1, "advice": 0}}
# Share of replies whose level follows the cue; the rest draw a level uniformly (which may match too).
LARGE_FOLLOW_CUE = 0.65
LARGE_CUE_WEIGHTS = {"er": {"high": 35, "none": 35, "low": 30}, "ip": {"named": 40, "vague": 25, "none": 35},
                     "ex": {"more": 30, "none": 35, "advice": 35}}

CUE_SENTENCES = {
    "er": {
        "high": {"neg": ["I can't stop crying.", "Honestly I feel like I'm falling apart.",
                         "This is the worst I've felt in years.", "I've barely slept since.",
                         "My hands are still shaking.", "I really don't know how much more of this I can take.",
                         "I spent the whole evening in tears.", "It feels like the floor dropped out from under me."],
                 "pos": ["I'm literally jumping up and down!", "I can't stop grinning!", "I'm so happy I could cry!",
                         "This is the best day I've had in ages!", "I keep doing a little dance in the kitchen!"]},
        "low": {"neg": ["It's not a huge deal, I guess.", "I'm mostly okay, just a bit thrown.",
                        "It's not the end of the world.", "It's a small thing really.",
                        "I'll live, it's just annoying.", "I'm handling it fine, mostly."],
                "pos": ["Nothing huge, but it's something.", "Small thing, but still.", "It's a quiet kind of good.",
                        "Not a big deal to anyone else, but okay."]},
    },
    "ip": {
        "named": {"neg": ["I feel so {feel} and I don't think anyone around me gets it.", "Mostly I just feel {feel}.",
                          "I keep feeling {feel} and I can't explain why.",
                          "Part of me feels {feel} and part of me thinks I'm overreacting.",
                          "I've felt {feel} all week.", "Everyone says I'll be fine but I feel {feel}."],
                  "pos": ["I feel so {feel} right now.", "Mostly I just feel {feel}.",
                          "I didn't expect to feel this {feel}."]},
        "vague": {"neg": ["It's a lot.", "It's been weird.", "I don't know, it's complicated.", "It's hard to describe.",
                          "My head is all over the place."],
                  "pos": ["It's a weird feeling.", "I don't know how to describe it.", "It's a lot to take in."]},
    },
    "ex": {
        "more": {"neg": ["There's a lot more to it, honestly.", "I haven't told anyone the whole story.",
                         "I don't even know where to start.", "There's more going on than I can fit in a message.",
                         "It goes back further than this."],
                 "pos": ["There's a whole story behind it.", "It took a lot to get here, honestly.",
                         "I haven't told anyone the whole story yet."]},
        "advice": {"neg": ["What should I do?", "Any practical tips?", "What would you do in my place?",
                           "How do I fix this?", "Where do I even begin fixing this?"],
                   "pos": ["Any tips to keep it going?", "How do I keep this up?", "What should I do next?"]},
    },
}
# Openings of a first speaker turn, and of the follow-up turn after the listener's reply.
SPEAKER_OPENERS = {"neg": ["", "", "", "Hey. ", "Can I vent for a second? ", "So, ", "Ugh. ",
                           "I need to tell someone this. ", "Okay, so. "],
                   "pos": ["", "", "Guess what! ", "Okay, good news. ", "So, ", "Hey! "]}
FOLLOWUP_OPENERS = {"neg": ["Thanks.", "Yeah.", "Thanks for listening.", "I appreciate that.", "Yeah, maybe.",
                            "It helps to say it out loud.", "Thank you, really."],
                    "pos": ["Thanks!", "Thank you!", "Haha, thanks.", "I know, right?", "Thanks, really."]}
# A topical line for the follow-up; {mine} is the situation's event in the first person.
FOLLOWUP_TOPICAL = {"neg": ["I keep going over {mine} in my head.", "{Mine} is all I can think about.",
                            "Nobody at home really knows about {mine}.", "I thought I was past {mine} by now.",
                            "Every time I try to relax I end up thinking about {mine}."],
                    "pos": ["I keep thinking about {mine}.", "{Mine} still feels unreal.",
                            "I told my cat about {mine} before I told anyone else."]}
# ED emotion of a conversation, from the seeker's feeling word (other negative feelings: sad).
FEEL_EMOTION = {
    **dict.fromkeys(["abandoned", "alone", "excluded", "forgotten", "invisible", "isolated", "left behind",
                     "left out", "lonely", "shut out", "unwanted", "unimportant", "misunderstood", "rejected",
                     "homesick"], "lonely"),
    **dict.fromkeys(["anxious", "nervous", "on edge", "pressured", "stressed", "tense", "unsettled", "worried",
                     "frantic", "panicked", "overwhelmed", "frozen", "desperate", "trapped"], "anxious"),
    **dict.fromkeys(["scared", "shaken"], "afraid"), "terrified": "terrified",
    **dict.fromkeys(["dreadful", "conflicted", "confused", "unsure", "torn"], "apprehensive"),
    **dict.fromkeys(["devastated", "gutted", "heartbroken", "shattered", "crushed", "hopeless", "helpless"],
                    "devastated"),
    **dict.fromkeys(["betrayed", "bitter", "resentful"], "angry"), "furious": "furious",
    **dict.fromkeys(["frustrated", "dismissed"], "annoyed"),
    **dict.fromkeys(["ashamed", "worthless", "useless", "inadequate", "stupid", "foolish", "small"], "ashamed"),
    **dict.fromkeys(["embarrassed", "humiliated", "awkward", "self-conscious"], "embarrassed"),
    "guilty": "guilty", "blindsided": "surprised",
    **dict.fromkeys(["disappointed", "discouraged", "defeated", "overlooked", "undervalued"], "disappointed"),
    "proud": "proud", "hopeful": "hopeful", "relieved": "grateful", "lighter": "content", "strong": "confident",
    "excited": "excited",
}
LARGE_SPLIT_CONVS = {"train": 3500, "valid": 320, "test": 320}  # ~4,600/420/420 replies, < 3 MB in all
LARGE_FOUR_TURN_SHARE = 0.3   # the rest are one speaker turn and one reply
LARGE_MAX_REPLY_WORDS = 45    # keeps target sequences short for the small policy's PPO
LARGE_SEED_OFFSET = "ed-large"

# ==================================================================================================
# DailyDialog-format samples: everyday dialogues, turns separated by " | ".
# ==================================================================================================

DAILYDIALOG = {
    "train": [
        "Excuse me, is this seat taken? | No, go ahead. | Thanks. It's so crowded this morning. | It's always like this on Mondays.",
        "What do you want for dinner tonight? | How about pasta? | We had pasta yesterday. | Fine, let's order pizza then. | Deal.",
        "Can I help you find something? | Yes, I'm looking for a blue sweater in medium. | They're on the back wall, next to the jackets. | Great, thank you.",
        "Did you finish the report? | Almost. I just need to add the charts. | Can you send it by three? | Sure, no problem.",
        "How was your weekend? | Pretty relaxing. I went hiking with my brother. | Where did you go? | The trail by the lake. The view was amazing.",
        "Hello, I'd like to book a table for four. | For what time? | Seven thirty, if possible. | We have a table at seven forty-five. | That works. Thanks.",
        "Why are you so late? | The bus broke down halfway here. | Again? That's the second time this week. | I know. I'm going to start biking.",
        "Do you know where the post office is? | Go straight two blocks and turn left. | Is it far? | About five minutes on foot.",
        "I'm thinking about getting a cat. | Really? Who will feed it when you travel? | My neighbor said she could help. | Then go for it.",
        "Is it going to rain today? | The forecast says afternoon showers. | I'd better take an umbrella. | Good idea.",
        "Could you turn the music down a little? | Sorry, is it too loud? | A bit. I'm trying to study. | No problem.",
        "How much is this lamp? | It's forty dollars. | Can you do thirty-five? | I can do thirty-eight. | Okay, I'll take it.",
        "Have you seen my keys? | They're on the kitchen counter. | Oh, thanks. I've been looking everywhere. | You always leave them there.",
        "What time does the library close? | At eight on weekdays. | And on Saturday? | Five o'clock.",
        "I got the job! | Congratulations! When do you start? | Next Monday. | We should celebrate this weekend.",
        "My phone battery died again. | You should get a new battery. | Where can I get it replaced? | There's a repair shop near the station.",
        "Would you like some more tea? | Yes, please. Just half a cup. | Sugar? | No, thank you.",
        "Did you watch the game last night? | I did. What an ending! | I couldn't believe that last goal. | Neither could I.",
        "Hi, I'm calling about the apartment for rent. | Yes, it's still available. | Can I come see it tomorrow? | Sure, how about ten in the morning? | Perfect.",
        "Are you ready for the exam? | Not really. I've only studied half the chapters. | Want to study together tonight? | That would really help.",
        "Your garden looks beautiful. | Thanks! I've been working on it all spring. | What are those yellow flowers? | Marigolds. They're easy to grow.",
        "Can you pick up some milk on the way home? | Sure. Anything else? | Maybe some bread too. | Got it.",
        "I think I'm catching a cold. | You should go to bed early tonight. | I will. I also need some cough drops. | There are some in the bathroom cabinet.",
        "Where did you buy that jacket? | At the mall downtown. It was on sale. | It looks great on you. | Thanks!",
        "Let's go to the beach this Saturday. | I'd love to, but I have to work. | What about Sunday? | Sunday works.",
        "How long have you been learning Spanish? | About two years. | Your accent is really good. | Thanks, I practice with a friend from Madrid.",
        "Waiter, could we have the check, please? | Of course. Will that be together or separate? | Together, please. | I'll be right back.",
        "Why don't you come to the party tonight? | I'm really tired. | Just come for an hour. | Alright, one hour.",
        "What's wrong? You look upset. | I failed my driving test. | I'm sorry. You can take it again, right? | Yes, in two weeks.",
        "Can I borrow your bike this afternoon? | Sure, but the front tire is a bit low. | I'll pump it up. | The pump is in the garage.",
        "Good morning. How can I help you? | I'd like to open a savings account. | Do you have your ID with you? | Yes, here it is.",
        "This soup is delicious. | Thanks, it's my grandmother's recipe. | Could you teach me how to make it? | Sure, it's easy.",
        "Did you hear that the cafe on the corner is closing? | No! Why? | The rent went up. | That's a shame. I loved their muffins.",
        "I can't find a parking space anywhere. | Try the lot behind the cinema. | Is it free? | After six it is.",
        "Are you going home for the holidays? | Yes, I fly out on the twentieth. | Lucky you. I have to work. | That's too bad.",
        "How do I get to the train station from here? | Take the number twelve bus. | How often does it come? | Every ten minutes.",
        "My computer keeps freezing. | Have you tried restarting it? | Three times. | Then maybe it needs more memory.",
        "What are you reading? | A mystery novel my sister gave me. | Is it good? | I can't put it down.",
        "Do you want to split a taxi to the airport? | Sure, what time is your flight? | Nine fifteen. | Mine's at nine forty. Let's leave at seven.",
        "Happy birthday! | Thank you! I can't believe I'm thirty. | You don't look a day over twenty-five. | You're too kind.",
    ],
    "validation": [
        "Is there a pharmacy near here? | There's one across from the bank. | Is it open on Sundays? | Until noon, I think.",
        "Can you help me move this sofa? | Sure. Where do you want it? | By the window. | On three, then.",
        "Did you call your mother back? | Not yet. I'll call her after lunch. | Don't forget, it's her birthday. | Oh no, I almost forgot.",
        "How was the concert? | Loud, but really fun. | Did they play your favorite song? | They saved it for the encore.",
        "I'd like to return these shoes. | Is there a problem with them? | They're too small. | Would you like a bigger size instead?",
        "What's the weather like in your city? | Cold and windy this week. | It's warm here. | Lucky you.",
        "Do you have any plans for the summer? | I'm going to take a cooking class. | That sounds fun. | I hope so.",
        "The printer is out of paper again. | There's more in the supply closet. | Can you grab some? | Sure, one second.",
    ],
    "test": [
        "Do you want to go for a walk? | Sure, just let me get my shoes. | Let's go to the park. | Good idea, it's a nice day.",
        "Where should I put these boxes? | In the garage, please. | All of them? | Except the one with the dishes.",
        "Excuse me, what time is it? | It's a quarter past four. | Thank you. | You're welcome.",
        "How is your new job going? | It's busy, but I like my team. | That's the most important thing. | I agree.",
        "Could you recommend a good restaurant? | The Italian place on Main Street is great. | Is it expensive? | Not really.",
        "Are you coming to the meeting? | Which meeting? | The budget meeting at two. | Oh, I had no idea. I'll be there.",
        "I burned the toast again. | Turn the dial down a little. | It's already on the lowest setting. | Then we need a new toaster.",
        "What did the doctor say? | Just a sprained ankle. | That's a relief. | I have to rest it for a week.",
    ],
}

# ==================================================================================================
# PEC-format samples (happy and offmychest). Each conversation: (speaker, utterance) turns; the last
# turn is the reply. One three-speaker thread per domain shows what the reader skips.
# ==================================================================================================

PEC = {
    "happy": {
        "train": [
            [("sunny_dayz", "Finally paid off my student loans today after eight years!"),
             ("mapleleaf88", "That is huge, congratulations! Eight years of payments is no joke.")],
            [("riverstone_k", "My grandma turned 100 today and she still beat me at cards."),
             ("pixel_owl", "Ha, that's amazing. She sounds like a legend."),
             ("riverstone_k", "She really is. She says the secret is a cup of coffee every morning."),
             ("pixel_owl", "I'm starting that habit tomorrow then!")],
            [("lemon_drop7", "Adopted a senior dog from the shelter this weekend. He snores like a truck."),
             ("quiet_harbor", "Senior dogs are the best. Thank you for giving him a home.")],
            [("tall_pine", "I passed my citizenship test this morning!"),
             ("blue_kettle", "Congrats! How long was the whole process?"),
             ("tall_pine", "Almost three years. I'm so relieved it's done."),
             ("blue_kettle", "Three years of waiting, you must be thrilled. Welcome!")],
            [("mapleleaf88", "Planted my first vegetable garden and got my first tomato today."),
             ("sunny_dayz", "Nice!"),
             ("lemon_drop7", "There's nothing like the first tomato of the season. Enjoy it!")],
        ],
        "valid": [
            [("pixel_owl", "My little sister got her first library card and checked out ten books."),
             ("tall_pine", "That is adorable. Sounds like a future bookworm.")],
            [("quiet_harbor", "After two years of trying, we are finally expecting a baby."),
             ("riverstone_k", "Oh, that's wonderful news. Congratulations to you both!")],
        ],
        "test": [
            [("blue_kettle", "Went a whole month without ordering takeout and saved $300."),
             ("sunny_dayz", "That's great discipline! What are you going to do with the savings?"),
             ("blue_kettle", "Putting it toward a weekend trip to the coast."),
             ("sunny_dayz", "That sounds like the perfect reward.")],
            [("lemon_drop7", "My dad learned to video call so he can read bedtime stories to my kids."),
             ("pixel_owl", "That's so sweet. Your kids are lucky to have him.")],
        ],
    },
    "offmychest": {
        "train": [
            [("night_owl_22", "I feel like I'm invisible at family gatherings. Nobody asks me anything about my life."),
             ("gentle_fern", "That sounds really lonely. You deserve to be asked about your life too.")],
            [("cardboard_crown", "I've been pretending to go to work for two weeks. I got fired and I can't tell my wife."),
             ("harbor_light", "That's a heavy secret to carry. What's stopping you from telling her?"),
             ("cardboard_crown", "I'm scared she'll think I'm a failure."),
             ("harbor_light", "I understand that fear, but most partners would rather know and help.")],
            [("slow_tide", "My best friend forgot my birthday and posted pictures from a party the same night."),
             ("night_owl_22", "Ouch. That would hurt me a lot too. Have you told her how you feel?")],
            [("gentle_fern", "I miss my dad every day. It's been five years and it still hits me out of nowhere."),
             ("quiet_meadow", "Grief doesn't keep a schedule. I'm sorry you lost him.")],
            [("harbor_light", "I hate my job but I'm too scared to quit."),
             ("slow_tide", "Same here honestly."),
             ("quiet_meadow", "Could you start looking quietly before you decide anything?")],
        ],
        "valid": [
            [("quiet_meadow", "I cancel plans every weekend because I'm exhausted from pretending I'm fine all week."),
             ("cardboard_crown", "That sounds draining. Is there anyone you don't have to pretend around?")],
            [("slow_tide", "My roommate moved out without warning and left me with the full rent."),
             ("gentle_fern", "That's awful, I'm sorry. Do you have a lease that lists both of you?")],
        ],
        "test": [
            [("night_owl_22", "I finally told my therapist the thing I've been hiding for years."),
             ("harbor_light", "That takes a lot of courage. How do you feel now?"),
             ("night_owl_22", "Lighter, but also really exposed."),
             ("harbor_light", "Both make sense. You did something really hard today.")],
            [("cardboard_crown", "Nobody at work noticed I was gone for a week."),
             ("quiet_meadow", "I'm sorry, that would sting. You matter even when people don't say it.")],
        ],
    },
}
PEC_PERSONAS = {
    "sunny_dayz": ["I like running in the morning."], "mapleleaf88": ["I grow vegetables on my balcony."],
    "riverstone_k": ["I play cards with my family every Sunday."], "pixel_owl": ["I work as a web designer."],
    "lemon_drop7": ["I have two kids and an old dog."], "quiet_harbor": ["I volunteer at an animal shelter."],
    "tall_pine": ["I moved to this country five years ago."], "blue_kettle": ["I am saving up to travel."],
    "night_owl_22": ["I work night shifts at a hospital."], "gentle_fern": ["I lost my father a few years ago."],
    "cardboard_crown": ["I used to work in sales."], "harbor_light": ["I am a good listener."],
    "slow_tide": ["I share an apartment downtown."], "quiet_meadow": ["I like long walks by myself."],
}

# ==================================================================================================
# Composition
# ==================================================================================================

MECHS = ("er", "ip", "ex")
MECH_NAMES = {"er": "emotional_reactions", "ip": "interpretations", "ex": "explorations"}
_TAG = re.compile(r"<(er|ip|ex)([12])>(.*?)</\1\2>", re.S)
# Sympathy phrases that only ER fragments may contain (checked on every level-0 ER response).
# Phrases of understanding that only IP fragments may contain (checked on level-0 IP responses).
UNDERSTANDING_MARKERS = re.compile(r"\b(I understand|I get it|sounds like|must (be|feel|have)|I know (how|what|the "
                                   r"feeling)|been there|I can relate|makes sense|I hear you|no wonder|same here|"
                                   r"similar)\b", re.I)
WARMTH_MARKERS = re.compile(r"\b(sorry|hugs?|my heart|sending (you )?(so much |all my )?(love|hugs|warmth|strength)|"
                            r"proud of you|happy for you|congrat\w*)\b", re.I)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _fill(template: str, values: dict) -> str:
    out = template.format(**values)
    return _cap(out) if template.startswith("{") else out


def parse_hand_response(tagged: str) -> tuple[str, dict[str, int], dict[str, list[str]]]:
    """Strip the inline tags; return the text, the level per mechanism and the rationale spans."""
    levels, spans = dict.fromkeys(MECHS, 0), {m: [] for m in MECHS}
    for mech, level, span in _TAG.findall(tagged):
        levels[mech] = max(levels[mech], int(level))
        spans[mech].append(span)
    text = _TAG.sub(lambda m: m.group(3), tagged)
    if "<" in text or ">" in text:
        raise ValueError(f"unbalanced tag in hand-written response: {tagged!r}")
    return text, levels, spans


def _random_id(rng: random.Random, length: int, used: set[str]) -> str:
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
    while True:
        ident = "".join(rng.choice(alphabet) for _ in range(length))
        if ident not in used:
            used.add(ident)
            return ident


def _slot_fills(rng: random.Random, slots: dict) -> dict:
    values = {}
    for name in sorted(slots):
        choice = rng.choice(slots[name])
        values.update(choice if isinstance(choice, dict) else {name: choice})
    return values


def _seeker_instance(rng: random.Random, sit: dict) -> dict:
    values = _slot_fills(rng, sit["slots"])
    valence = sit["valence"]
    post = rng.choice(POST_PREFIXES[valence]) + _fill(sit["post"], values) + rng.choice(POST_SUFFIXES[valence])
    if rng.random() < 0.15:  # some seekers write in lower case, as on the forums
        post = post.lower()
    event = sit["event"].format(**values)
    return {"sit": sit, "post": post, "event": event, "feel": rng.choice(sit["feels"])}


def _compose_response(rng: random.Random, inst: dict, levels: dict[str, int],
                      n_advice: int | None = None) -> tuple[str, dict[str, str]]:
    """A response with one fragment per mechanism at its level; ``n_advice`` neutral sentences
    (drawn when None: 1-2 for an all-zero response, else 0 or 1)."""
    sit, valence = inst["sit"], inst["sit"]["valence"]
    shared = sit["mine"] or (SHARED_POS if valence == "pos" else SHARED[sit["topic"]])
    banks = {"er": ER_BANK, "ip": IP_BANK, "ex": EX_BANK}
    templates = {m: rng.choice(banks[m][valence][lvl]) for m, lvl in levels.items() if lvl}
    if n_advice is not None:
        pass
    elif not any(levels.values()):
        n_advice = rng.choice((1, 1, 2))
    else:
        n_advice = 1 if rng.random() < 0.45 else 0
    # Mostly advice written for the situation, sometimes a generic line.
    own, generic = list(sit["advice"]), list(POS_ADVICE if valence == "pos" else GENERIC_ADVICE)
    advice = []
    for _ in range(n_advice):
        pool = own if own and rng.random() < 0.7 else generic
        advice.append(pool.pop(rng.randrange(len(pool))))
    orders = [("er", "ip", "adv", "ex"), ("ex", "er", "ip", "adv"), ("ip", "er", "adv", "ex"),
              ("adv", "er", "ip", "ex"), ("er", "ex", "ip", "adv"), ("ip", "adv", "ex", "er")]
    order = rng.choices(orders, weights=(50, 12, 14, 10, 8, 6))[0]
    values = {"event": inst["event"], "Event": _cap(inst["event"]), "feel": inst["feel"], "mine": rng.choice(shared)}
    pieces: list[tuple[str | None, str]] = []
    for key in order:
        if key == "adv":
            pieces.extend((None, a) for a in advice)
        elif key in templates:
            pieces.append((key, _fill(templates[key], values)))
            if "vent}" in templates[key]:  # name the event once, then refer back to it
                values.update(event="all this", Event="All this")
    style = rng.random()
    if style < 0.12:  # all lower case
        pieces = [(k, t.lower()) for k, t in pieces]
    elif style < 0.22 and pieces[-1][1].endswith("."):  # no final full stop
        pieces[-1] = (pieces[-1][0], pieces[-1][1][:-1])
    text = " ".join(t for _, t in pieces)
    return text, {k: t for k, t in pieces if k}


def compose_epitome(seed: int = SEED) -> tuple[list[dict], dict]:
    """All EPITOME rows (one dict per pair with levels and rationales per mechanism) and a summary."""
    rng = random.Random(f"{seed}-epitome")
    used_sp, used_rp = set(), set()
    rows = []
    # Hand-written pairs first: they are fixed, the composer fills the remaining level counts.
    for seeker, responses in HAND_PAIRS:
        sp_id = _random_id(rng, 6, used_sp)
        for tagged in responses:
            text, levels, spans = parse_hand_response(tagged)
            rows.append({"sp_id": sp_id, "rp_id": _random_id(rng, 7, used_rp), "seeker_post": seeker,
                         "response_post": text, "levels": levels, "rationales": spans, "source": "hand"})
    n_hand = len(rows)
    hand_counts = {m: Counter(r["levels"][m] for r in rows) for m in MECHS}
    n_total = sum(EPITOME_TARGET["er"])
    columns = {}
    for m in MECHS:
        need = [EPITOME_TARGET[m][lvl] - hand_counts[m][lvl] for lvl in range(3)]
        if min(need) < 0 or sum(EPITOME_TARGET[m]) != n_total:
            raise ValueError(f"EPITOME targets for {m} are inconsistent with the hand-written pairs")
        column = [lvl for lvl in range(3) for _ in range(need[lvl])]
        rng.shuffle(column)
        columns[m] = column
    n_composed = n_total - n_hand
    # Seeker posts: cycle through the situations in a seeded order, each post getting 1-3 responses.
    order = list(range(len(SITUATIONS)))
    rng.shuffle(order)
    seen_posts, seen_pairs = set(), set()
    i, cursor = 0, 0
    while i < n_composed:
        sit = SITUATIONS[order[cursor % len(order)]]
        cursor += 1
        inst = _seeker_instance(rng, sit)
        while inst["post"] in seen_posts:
            inst = _seeker_instance(rng, sit)
        seen_posts.add(inst["post"])
        sp_id = _random_id(rng, 6, used_sp)
        for _ in range(min(rng.choices((1, 2, 3), weights=(45, 35, 20))[0], n_composed - i)):
            levels = {m: columns[m][i] for m in MECHS}
            text, spans = _compose_response(rng, inst, levels)
            while (inst["post"], text) in seen_pairs:
                text, spans = _compose_response(rng, inst, levels)
            seen_pairs.add((inst["post"], text))
            rows.append({"sp_id": sp_id, "rp_id": _random_id(rng, 7, used_rp), "seeker_post": inst["post"],
                         "response_post": text, "levels": levels,
                         "rationales": {m: [spans[m]] if m in spans else [] for m in MECHS}, "source": "composed"})
            i += 1
    rng.shuffle(rows)
    summary = {"pairs": len(rows), "hand": n_hand, "composed": n_composed,
               "seeker_posts": len({r["sp_id"] for r in rows}),
               "levels": {m: [sum(r["levels"][m] == lvl for r in rows) for lvl in range(3)] for m in MECHS}}
    return rows, summary


def epitome_files(rows: list[dict]) -> dict[str, bytes]:
    files = {}
    for m in MECHS:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["sp_id", "rp_id", "seeker_post", "response_post", "level", "rationales"])
        for r in rows:
            writer.writerow([r["sp_id"], r["rp_id"], r["seeker_post"], r["response_post"], r["levels"][m],
                             "|".join(r["rationales"][m])])
        files[f"epitome/{EPITOME_FILENAMES[m]}"] = buf.getvalue().encode("utf-8")
    return files


# -- EmpatheticDialogues --------------------------------------------------------------------------------

# Warm replies are written for every turn and questions not for the last, so warm is weighted lower.
ED_STYLE_WEIGHTS = {"w": 22, "u": 24, "q": 28, "n": 26}
ED_LENGTH_WEIGHTS = {2: 15, 3: 10, 4: 35, 5: 10, 6: 30}
ED_SPLIT_FILES = {"train": "train.csv", "valid": "valid.csv", "test": "test.csv"}


def _ed_field(text: str) -> str:
    if '"' in text or "\n" in text:
        raise ValueError(f"EmpatheticDialogues text must not contain quotes or newlines: {text!r}")
    return text.replace(",", "_comma_")


def compose_empathetic_dialogues(seed: int = SEED) -> tuple[dict[str, list[list[str]]], dict]:
    rng = random.Random(f"{seed}-ed")
    order = list(range(len(ED_SCRIPTS)))
    rng.shuffle(order)
    n_valid = n_test = max(1, round(len(order) * 0.1))
    split_of = {}
    for pos, k in enumerate(order):
        split_of[k] = "valid" if pos < n_valid else "test" if pos < n_valid + n_test else "train"
    rows: dict[str, list[list[str]]] = {s: [] for s in ED_SPLIT_FILES}
    styles = Counter()
    hit = 0
    for k in sorted(split_of, key=lambda k: (list(ED_SPLIT_FILES).index(split_of[k]), order.index(k))):
        script = ED_SCRIPTS[k]
        n_conv = rng.choice((3, 3, 4, 4))
        fills: list[dict] = []
        for _ in range(n_conv):
            values = _slot_fills(rng, script["slots"])
            for _retry in range(5):  # prefer fills not used yet for this script
                if values not in fills:
                    break
                values = _slot_fills(rng, script["slots"])
            fills.append(values)
            lengths = [n for n in ED_LENGTH_WEIGHTS if n <= len(script["turns"])]
            n_utt = rng.choices(lengths, weights=[ED_LENGTH_WEIGHTS[n] for n in lengths])[0]
            conv_id = f"hit:{hit}_conv:{2 * hit + rng.randint(0, 1)}"
            hit += 1
            speaker_ids = rng.sample(range(1, 900), 2)
            selfeval = "" if rng.random() < 0.15 else "_".join(
                "|".join(str(rng.randint(2 + j, 5)) for j in range(3)) for _ in range(2))
            prompt = _ed_field(script["prompt"].format(**values))
            for idx in range(1, n_utt + 1):
                turn = script["turns"][idx - 1]
                if isinstance(turn, dict):
                    allowed = sorted(turn)
                    style = rng.choices(allowed, weights=[ED_STYLE_WEIGHTS[s] for s in allowed])[0]
                    styles[style] += 1
                    text = turn[style]
                else:
                    text = rng.choice(turn)
                utterance = _ed_field(text.format(**values))
                rows[split_of[k]].append([conv_id, str(idx), script["emotion"], prompt,
                                          str(speaker_ids[(idx - 1) % 2]), utterance, selfeval, ""])
    summary = {s: {"conversations": len({r[0] for r in rs}), "utterances": len(rs),
                   "listener_turns": sum(int(r[1]) % 2 == 0 for r in rs),
                   "emotions": len({r[2] for r in rs})} for s, rs in rows.items()}
    summary["styles"] = dict(sorted(styles.items()))
    summary["all_emotions"] = sorted({s["emotion"] for s in ED_SCRIPTS})
    return rows, summary


def ed_files(rows: dict[str, list[list[str]]]) -> dict[str, bytes]:
    header = "conv_id,utterance_idx,context,prompt,speaker_idx,utterance,selfeval,tags"
    return {f"empathetic_dialogues/{name}": ("\n".join([header] + [",".join(r) for r in rows[split]]) + "\n")
            .encode("utf-8") for split, name in ED_SPLIT_FILES.items()}


# -- EmpatheticDialogues, large ------------------------------------------------------------------------


def _first_person(event: str) -> str:
    """'your friend not recognizing you' -> 'my friend not recognizing me' (events are written to the seeker)."""
    event = re.sub(r"\byou're\b", "I'm", event)
    event = re.sub(r"\byour\b", "my", event)
    return re.sub(r"\byou\b", "me", event)


def _fill_options(slots: dict) -> list[tuple[int, ...]]:
    """Every slot fill of a situation, as indices into its sorted slots' value lists."""
    names = sorted(slots)
    combos: list[tuple[int, ...]] = [()]
    for name in names:
        combos = [c + (i,) for c in combos for i in range(len(slots[name]))]
    return combos


def _fill_values(slots: dict, combo: tuple[int, ...]) -> dict:
    values = {}
    for name, i in zip(sorted(slots), combo):
        choice = slots[name][i]
        values.update(choice if isinstance(choice, dict) else {name: choice})
    return values


def _draw_cues(rng: random.Random) -> tuple[str, str, str]:
    return tuple(rng.choices(list(LARGE_CUE_WEIGHTS[m]), weights=list(LARGE_CUE_WEIGHTS[m].values()))[0]
                 for m in MECHS)


def _cue_text(rng: random.Random, cues: tuple[str, str, str], valence: str, feel: str) -> list[str]:
    sentences = [rng.choice(CUE_SENTENCES[m][cue][valence]).format(feel=feel)
                 for m, cue in zip(MECHS, cues) if cue in CUE_SENTENCES[m]]
    # The advice request reads best last; the other cue sentences come in any order.
    asks = [t for t in sentences if t.endswith("?")]
    rest = [t for t in sentences if not t.endswith("?")]
    rng.shuffle(rest)
    return rest + asks


def _levels_for(rng: random.Random, cues: tuple[str, str, str]) -> tuple[dict[str, int], int]:
    """Levels per mechanism: the cue's level with probability LARGE_FOLLOW_CUE, else uniform."""
    levels, followed = {}, 0
    for m, cue in zip(MECHS, cues):
        if rng.random() < LARGE_FOLLOW_CUE:
            levels[m] = LARGE_CUE_LEVEL[m][cue]
            followed += 1
        else:
            levels[m] = rng.randrange(3)
    return levels, followed


def _large_reply(rng: random.Random, inst: dict, levels: dict[str, int], asked: bool) -> str:
    """A listener reply at the given levels with situation-specific advice for on-topic content;
    advice always when the speaker asked for it, dropped first when the reply runs long."""
    if asked or not any(levels.values()):
        n_advice = rng.choice((1, 1, 2))
    else:
        n_advice = 1 if rng.random() < 0.6 else 0
    for attempt in range(30):  # other fragments first, then less advice, then none
        text, _ = _compose_response(rng, inst, levels, n_advice=(n_advice, min(n_advice, 1), 0)[attempt // 10])
        if len(text.split()) <= LARGE_MAX_REPLY_WORDS:
            return text
    raise ValueError(f"no reply of at most {LARGE_MAX_REPLY_WORDS} words for {inst['event']!r} at {levels}")


def _speaker_turn(rng: random.Random, opener: str, body: list[str], lower_p: float) -> str:
    text = opener + " ".join(t for t in body if t)
    return text.lower() if rng.random() < lower_p else text


def compose_empathetic_dialogues_large(seed: int = SEED) -> tuple[dict[str, list[list[str]]], dict]:
    """Conversations built on the EPITOME situations; each listener reply's levels depend partly on
    cues in the speaker's turn. Held-out splits use (situation, slot fill, cues) keys that the
    training split never uses, so no validation or test context is a training context."""
    rng = random.Random(f"{seed}-{LARGE_SEED_OFFSET}")
    n_held = {s: n for s, n in LARGE_SPLIT_CONVS.items() if s != "train"}
    per_sit = -(-sum(n_held.values()) // len(SITUATIONS))  # held-out keys reserved per situation
    reserved: dict[str, list[tuple]] = {s: [] for s in n_held}
    train_keys: list[list[tuple]] = []
    all_cues = [(a, b, c) for a in LARGE_CUE_LEVEL["er"] for b in LARGE_CUE_LEVEL["ip"] for c in LARGE_CUE_LEVEL["ex"]]
    for k, sit in enumerate(SITUATIONS):
        keys = [(k, combo, cues) for combo in _fill_options(sit["slots"]) for cues in all_cues]
        rng.shuffle(keys)
        held = keys[:per_sit]
        train_keys.append(keys[per_sit:])
        for i, key in enumerate(held):
            reserved["valid" if i % 2 == 0 else "test"].append(key)
    plan: dict[str, list[tuple]] = {}
    for split, keys in reserved.items():
        rng.shuffle(keys)
        plan[split] = keys[:n_held[split]]
    order = list(range(len(SITUATIONS)))
    rng.shuffle(order)
    plan["train"] = []
    for i in range(LARGE_SPLIT_CONVS["train"]):  # cycle the situations; cues drawn by their weights
        k = order[i % len(order)]
        cues = _draw_cues(rng)
        options = [key for key in train_keys[k] if key[2] == cues] or train_keys[k]
        plan["train"].append(rng.choice(options))
    rows: dict[str, list[list[str]]] = {s: [] for s in ED_SPLIT_FILES}
    level_counts = {m: [0, 0, 0] for m in MECHS}
    followed = total = 0
    hit = 0
    for split in ED_SPLIT_FILES:
        for k, combo, cues in plan[split]:
            sit = SITUATIONS[k]
            valence, values = sit["valence"], _fill_values(sit["slots"], combo)
            feel = rng.choice(sit["feels"])
            inst = {"sit": sit, "event": sit["event"].format(**values), "feel": feel}
            post = _fill(sit["post"], values)
            prompt = re.split(r"(?<=[.!?])\s", post)[0]
            emotion = FEEL_EMOTION.get(feel, "sad" if valence == "neg" else "proud")
            turns = [_speaker_turn(rng, rng.choice(SPEAKER_OPENERS[valence]),
                                   [post] + _cue_text(rng, cues, valence, feel), 0.1)]
            levels, n_followed = _levels_for(rng, cues)
            turns.append(_large_reply(rng, inst, levels, asked=cues[2] == "advice"))
            all_levels = [levels]
            followed, total = followed + n_followed, total + 3
            if rng.random() < LARGE_FOUR_TURN_SHARE:
                cues2 = _draw_cues(rng)
                mine = _first_person(inst["event"])
                topical = rng.choice(FOLLOWUP_TOPICAL[valence]).format(mine=mine, Mine=_cap(mine)) \
                    if rng.random() < 0.6 else ""
                turns.append(_speaker_turn(rng, rng.choice(FOLLOWUP_OPENERS[valence]) + " ",
                                           [topical] + _cue_text(rng, cues2, valence, feel), 0.1).strip())
                levels2, n_followed = _levels_for(rng, cues2)
                turns.append(_large_reply(rng, inst, levels2, asked=cues2[2] == "advice"))
                all_levels.append(levels2)
                followed, total = followed + n_followed, total + 3
            for lv in all_levels:
                for m in MECHS:
                    level_counts[m][lv[m]] += 1
            conv_id = f"hit:{hit}_conv:{2 * hit + rng.randint(0, 1)}"
            hit += 1
            speaker_ids = rng.sample(range(1, 900), 2)
            for idx, text in enumerate(turns, start=1):
                rows[split].append([conv_id, str(idx), emotion, _ed_field(prompt), str(speaker_ids[(idx - 1) % 2]),
                                    _ed_field(text), "", ""])
    summary = {s: {"conversations": len({r[0] for r in rs}), "utterances": len(rs),
                   "listener_turns": sum(int(r[1]) % 2 == 0 for r in rs),
                   "emotions": len({r[2] for r in rs})} for s, rs in rows.items()}
    summary["levels"] = level_counts
    summary["followed_cue"] = round(followed / total, 3)
    return rows, summary


def ed_large_files(rows: dict[str, list[list[str]]]) -> dict[str, bytes]:
    return {k.replace("empathetic_dialogues/", "empathetic_dialogues_large/", 1): v for k, v in ed_files(rows).items()}


# -- DailyDialog and PEC ---------------------------------------------------------------------------------


def _dd_tokenize(turn: str) -> str:
    """DailyDialog writes punctuation as separate tokens: 'Thanks , see you .'"""
    return re.sub(r"\s*([.,?!;:])(?=\s|$)", r" \1", turn.strip())


def dailydialog_files() -> dict[str, bytes]:
    files = {}
    for split, dialogues in DAILYDIALOG.items():
        # Each turn is followed by " __eou__"; lines end with the marker, as in the release.
        lines = [" ".join(_dd_tokenize(t) + " __eou__" for t in d.split(" | ")) for d in dialogues]
        files[f"dailydialog/{split}/dialogues_{split}.txt"] = ("\n".join(lines) + "\n").encode("utf-8")
    return files


def pec_files() -> dict[str, bytes]:
    files = {}
    sep = "*" * 20
    for domain, splits in PEC.items():
        speakers = set()
        for split, conversations in splits.items():
            lines = []
            for conv in conversations:
                lines.extend(f"{who}---+---{text}" for who, text in conv)
                lines.append(sep)
                speakers.update(who for who, _ in conv)
            files[f"pec/{domain}/{split}.txt"] = ("\n".join(lines) + "\n").encode("utf-8")
        persona = []
        for who in sorted(speakers):
            persona.extend([who, *PEC_PERSONAS[who], sep])
        files[f"pec/{domain}/persona.txt"] = ("\n".join(persona) + "\n").encode("utf-8")
    return files


# -- data card and writing --------------------------------------------------------------------------------

DATA_CARD = """\
# EmpRL demo data

Small, original data sets in the formats of the real releases, so that the EmpRL pipeline, its
readers and its tests run offline. **Everything here was written for this project**; no text was
copied from EmpatheticDialogues, EPITOME, DailyDialog or PEC. Regenerate every file (this card
included) with

    python -m emprl.data.compose_demo --out src/emprl/demo_data

The composer is deterministic (seed {seed}); the test suite regenerates the files into a temporary
folder and compares them byte for byte with the committed ones.

## Files

| Folder | Format | Content |
|---|---|---|
| `epitome/` | EPITOME (Sharma et al. 2020) CSVs: `sp_id,rp_id,seeker_post,response_post,level,rationales` | {ep_pairs} (seeker post, response) pairs, the same pairs in all three files, each file with its mechanism's level (0 no, 1 weak, 2 strong); rationales are the pipe-separated response spans behind the label, empty for level 0 |
| `empathetic_dialogues/` | EmpatheticDialogues CSVs (`conv_id,utterance_idx,context,prompt,speaker_idx,utterance,selfeval,tags`, commas written `_comma_`, no quoting) | {ed_convs} conversations of 2 to 6 utterances; odd `utterance_idx` = speaker, even = listener |
| `empathetic_dialogues_large/` | the same EmpatheticDialogues CSV format | {edl_convs} conversations of 2 or 4 utterances, composed from the EPITOME situations, for training a small policy from scratch (see below) |
| `dailydialog/` | DailyDialog `{{split}}/dialogues_{{split}}.txt`, one dialogue per line, each turn followed by ` __eou__` | {dd_counts} dialogues (train/validation/test) |
| `pec/` | PEC `{{happy,offmychest}}/{{train,valid,test}}.txt` (`speaker---+---utterance`, conversations closed by a line of twenty `*`) and `persona.txt` | {pec_counts} conversations; each `train.txt` holds one three-speaker thread, which the dialogue reader skips |

## How it was made

**EPITOME.** {ep_hand} pairs are fully hand-written and labelled by hand (inline tags in
`HAND_PAIRS` of `compose_demo.py` mark the rationale spans). The other {ep_composed} pairs are
composed: one of {n_sit} hand-written seeker situations (slot-filled, with varied openings and
endings, {ep_seekers} distinct seeker posts in all) gets a response built from one hand-written
fragment per mechanism at a chosen level plus optional neutral advice, in varied orders and
casings. The level columns are drawn so that each mechanism's counts match the targets below,
independently of each other. The fragments follow the EPITOME definitions:

- emotional reactions: 1 = generic sympathy ("That sucks.", "Hang in there."); 2 = a specific,
  heartfelt feeling about the seeker ("Reading about losing Biscuit honestly made me sad for you.");
- interpretations: 1 = generic understanding ("I get it."); 2 = a specific inference about the
  seeker's feelings or experience, or a similar experience of one's own;
- explorations: 1 = a generic question ("What happened?"); 2 = a question about specific feelings
  or experiences ("Have you been feeling numb most of the time, or does it come in waves?").

For composed pairs the rationale of a mechanism is its fragment. Only exploration fragments ask questions (no level-0 exploration response contains a `?`), only
emotional-reaction fragments carry sympathy words, and level 0 adds no fragment at all, so a response
with all three at 0 is plain advice or information.

Level counts ({ep_pairs} pairs; the real release has 3,084 with ER 2037/895/152, IP 1626/113/1345,
EX 2604/104/376):

| Mechanism | no (0) | weak (1) | strong (2) |
|---|---|---|---|
{ep_table}

**EmpatheticDialogues.** {n_scripts} hand-written scripts ({n_emotions}; topics include work,
family, pets, health, school, moving, money, friendship, achievements, loss). Each script has a
situation prompt with slots and up to six turns; each listener turn is written in up to four
styles: warm (emotional reaction), understanding (interpretation), question (exploration) and
plain. The composer makes 3 or 4 conversations per script with a drawn length, slot values and
listener style, so the references vary in empathy. Splits are by script (no prompt is shared
between splits), about 80/10/10.

| Split | conversations | utterances | listener turns | emotions |
|---|---|---|---|---|
{ed_table}

Listener styles over all splits: {ed_styles}.

**EmpatheticDialogues, large.** Built for the T5 lane of the demo experiment, where a ~10M
parameter model is trained from scratch and then tuned with PPO against the empathy identifiers.
Each conversation starts from one of the {n_sit} EPITOME situations with a slot fill; the speaker's
first turn is the situation post (with an optional opening) plus up to three cue sentences, one per
mechanism. A reply is composed from the same fragment banks as the EPITOME pairs (so the
identifiers trained on `epitome/` recognise its levels) plus advice written for the situation, which
keeps plain on-topic content in the reply (advice is always present when the speaker asks for it or
all levels are 0). {four_pct}% of the conversations continue with a speaker follow-up (thanks, a
first-person line about the event, fresh cues) and a second reply. Replies are at most
{max_words} words.

The level of each mechanism depends partly on the speaker's turn: with probability
{follow_pct}% it is the level the cue asks for, otherwise it is drawn uniformly from no/weak/strong
(so it matches the cue {match_pct}% of the time in expectation; measured share of draws that
followed the cue: {followed}). The cues:

| Mechanism | cue -> level |
|---|---|
| emotional reactions | intense feeling ("I can't stop crying.") -> strong; no cue -> weak; played down ("It's not the end of the world.") -> no |
| interpretations | feeling named ("Mostly I just feel numb.") -> strong; vague ("It's a lot.") -> weak; no cue -> no |
| explorations | more to tell ("I haven't told anyone the whole story.") -> strong; no cue -> weak; asks for advice ("What should I do?") -> no |

Validation and test conversations use (situation, slot fill, cue combination) keys reserved before
the training split is drawn, so no held-out first turn is a training first turn (surface openings,
cue wordings and replies vary on top). The training split draws keys with replacement, cycling the
situations.

| Split | conversations | utterances | listener turns | emotions |
|---|---|---|---|---|
{edl_table}

Composed levels of the listener replies over all splits (no/weak/strong): {edl_levels}. These are
the levels the composer chose; the gold levels used in training come from the identifiers (`emprl.label`).

**DailyDialog and PEC.** Short hand-written samples, enough for the readers' tests and examples.

## License

Apache-2.0, like the rest of EmpRL.

## Intended use

Demos, tutorials and tests of the pipeline only. These files are far too small and too regular to
say anything about real empathetic dialogue: **do not report research results on them**. For
results use the real EmpatheticDialogues and EPITOME releases under their own licenses.

## Known limits

- Composed EPITOME responses reuse a fixed set of fragments; a classifier can partly learn them as
  templates (the hand-written pairs are there to make that harder, not impossible). Seeker posts of
  the same situation differ only in slot values, openings and endings.
- Levels of the three mechanisms are drawn independently for composed pairs; in real data they are
  correlated.
- The dialogues are short, clean and single-author: no typos, slang or off-topic turns as in
  crowd-sourced data, and conversations of the same script share much of their wording.
- Identifiers and metadata are placeholders: EPITOME `sp_id`/`rp_id` are random base-36 strings,
  EmpatheticDialogues `speaker_idx` and `selfeval` are drawn at random.
- In `empathetic_dialogues_large/` the cue sentences are drawn independently, so a few speaker turns
  mix an intense and a played-down sentence; the 64 situations repeat many times with different
  fills, cues and replies, and the mapping from cues to levels is a design choice, not an observation.
- All text is in English and reflects one writer's idea of everyday and mental-health situations.
"""


def data_card(ep_summary: dict, ed_summary: dict, edl_summary: dict) -> bytes:
    names = {"er": "emotional reactions", "ip": "interpretations", "ex": "explorations"}
    ep_table = "\n".join(f"| {names[m]} | {c[0]} | {c[1]} | {c[2]} |" for m, c in ep_summary["levels"].items())
    ed_rows = []
    for split in ED_SPLIT_FILES:
        s = ed_summary[split]
        ed_rows.append(f"| {split} | {s['conversations']} | {s['utterances']} | {s['listener_turns']} | "
                       f"{s['emotions']} |")
    style_names = {"w": "warm", "u": "understanding", "q": "question", "n": "plain"}
    ed_styles = ", ".join(f"{style_names[k]} {v}" for k, v in ed_summary["styles"].items())
    dd_counts = "/".join(str(len(DAILYDIALOG[s])) for s in ("train", "validation", "test"))
    pec_counts = ", ".join(f"{d} " + "/".join(str(len(PEC[d][s])) for s in ("train", "valid", "test"))
                           for d in PEC)
    edl_table = "\n".join(
        f"| {split} | {edl_summary[split]['conversations']} | {edl_summary[split]['utterances']} | "
        f"{edl_summary[split]['listener_turns']} | {edl_summary[split]['emotions']} |" for split in ED_SPLIT_FILES)
    edl_levels = "; ".join(f"{names[m]} {'/'.join(map(str, c))}" for m, c in edl_summary["levels"].items())
    text = DATA_CARD.format(
        edl_convs=sum(edl_summary[s]["conversations"] for s in ED_SPLIT_FILES), edl_table=edl_table,
        edl_levels=edl_levels, four_pct=round(100 * LARGE_FOUR_TURN_SHARE), max_words=LARGE_MAX_REPLY_WORDS,
        follow_pct=round(100 * LARGE_FOLLOW_CUE), match_pct=round(100 * (LARGE_FOLLOW_CUE + (1 - LARGE_FOLLOW_CUE) / 3)),
        followed=edl_summary["followed_cue"],
        seed=SEED, ep_pairs=ep_summary["pairs"], ep_hand=ep_summary["hand"], ep_composed=ep_summary["composed"],
        ep_seekers=ep_summary["seeker_posts"], n_sit=len(SITUATIONS), ep_table=ep_table,
        ed_convs=sum(ed_summary[s]["conversations"] for s in ED_SPLIT_FILES), n_scripts=len(ED_SCRIPTS),
        n_emotions=("all 32 emotions" if len(ed_summary["all_emotions"]) == 32
                    else f"{len(ed_summary['all_emotions'])} of the 32 emotions"), ed_table="\n".join(ed_rows), ed_styles=ed_styles,
        dd_counts=dd_counts, pec_counts=pec_counts)
    return text.encode("utf-8")


def build_all(seed: int = SEED) -> tuple[dict[str, bytes], dict]:
    """Every demo file as relative path -> bytes, and the counts printed by ``main``."""
    ep_rows, ep_summary = compose_epitome(seed)
    ed_rows, ed_summary = compose_empathetic_dialogues(seed)
    edl_rows, edl_summary = compose_empathetic_dialogues_large(seed)
    files = {}
    files.update(epitome_files(ep_rows))
    files.update(ed_files(ed_rows))
    files.update(ed_large_files(edl_rows))
    files.update(dailydialog_files())
    files.update(pec_files())
    files["DATA_CARD.md"] = data_card(ep_summary, ed_summary, edl_summary)
    return files, {"epitome": ep_summary, "empathetic_dialogues": ed_summary,
                   "empathetic_dialogues_large": edl_summary}


def write_files(files: dict[str, bytes], out: Path) -> None:
    """Write each file atomically (temporary file in the same folder, then os.replace)."""
    for rel in sorted(files):
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(files[rel])
            os.chmod(tmp, 0o644)  # mkstemp creates 0600; data files are meant to be shared
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


def _print_summary(summary: dict, n_files: int, out: Path) -> None:
    ep = summary["epitome"]
    print(f"wrote {n_files} files under {out}")
    print(f"EPITOME: {ep['pairs']} pairs ({ep['hand']} hand-written, {ep['composed']} composed), "
          f"{ep['seeker_posts']} seeker posts")
    for m, counts in ep["levels"].items():
        print(f"  {MECH_NAMES[m]:<20} no {counts[0]:>4}  weak {counts[1]:>4}  strong {counts[2]:>4}")
    ed = summary["empathetic_dialogues"]
    print("EmpatheticDialogues:")
    for split in ED_SPLIT_FILES:
        s = ed[split]
        print(f"  {split:<6} {s['conversations']:>4} conversations {s['utterances']:>5} utterances "
              f"{s['listener_turns']:>4} listener turns {s['emotions']:>3} emotions")
    print(f"  listener styles: {ed['styles']}")
    edl = summary["empathetic_dialogues_large"]
    print("EmpatheticDialogues (large):")
    for split in ED_SPLIT_FILES:
        s = edl[split]
        print(f"  {split:<6} {s['conversations']:>4} conversations {s['utterances']:>5} utterances "
              f"{s['listener_turns']:>4} listener turns {s['emotions']:>3} emotions")
    for m, counts in edl["levels"].items():
        print(f"  {MECH_NAMES[m]:<20} no {counts[0]:>4}  weak {counts[1]:>4}  strong {counts[2]:>4}")
    print(f"  levels that followed the cue: {edl['followed_cue']}")
    print(f"DailyDialog: {', '.join(f'{s} {len(d)}' for s, d in DAILYDIALOG.items())} dialogues")
    print("PEC: " + ", ".join(f"{d}/{s} {len(c)}" for d, sp in PEC.items() for s, c in sp.items()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m emprl.data.compose_demo", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(DEMO_DATA_DIR), help="output folder (default: the packaged demo_data)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    files, summary = build_all()
    write_files(files, out)
    _print_summary(summary, len(files), out)


if __name__ == "__main__":
    main()
