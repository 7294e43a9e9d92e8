"""The hospital's clinical model: clusters of co-occurring codes, background comorbidities and
procedures, the administrative vocabularies (MIMIC spellings) and the mortality intercept."""

from __future__ import annotations

# Clinical clusters: co-occurring codes, procedures and admission diagnosis text. The first
# code of a cluster is its principal diagnosis when the cluster is the admission's primary.
_CLUSTERS: dict[str, dict] = {
    "sepsis": dict(
        dx={"0389": .75, "99591": .4, "99592": .45, "5990": .3, "486": .25, "03842": .08,
            "03811": .05, "03812": .05, "03849": .06, "0380": .04, "7907": .05, "0414": .15,
            "04111": .06, "04104": .05, "0413": .05, "00845": .08, "6826": .05, "99662": .04,
            "1120": .05, "1125": .02, "2762": .25, "2875": .15, "2866": .03, "V090": .04},
        px={"3893": .6, "0014": .06, "0017": .15, "9904": .2},
        text=["SEPSIS", "FEVER", "PNEUMONIA", "UROSEPSIS", "FEVER, HYPOTENSION"]),
    "resp_failure": dict(
        dx={"51881": .85, "486": .4, "5070": .25, "5119": .25, "5180": .2, "51884": .1,
            "51882": .08, "79902": .1, "4821": .04, "48241": .04, "41519": .04},
        px={"9604": .7, "9390": .15, "3324": .08, "3322": .1, "3491": .1, "966": .35, "3893": .3},
        text=["RESPIRATORY FAILURE", "PNEUMONIA", "HYPOXIA", "SHORTNESS OF BREATH"]),
    "aki": dict(
        dx={"5849": .85, "5845": .15, "2762": .3, "2767": .25, "2761": .15, "27651": .1, "27669": .08},
        px={"3995": .2, "3895": .15},
        text=["ACUTE RENAL FAILURE", "RENAL FAILURE"]),
    "acs": dict(
        dx={"41071": .5, "41401": .8, "4111": .1, "41011": .12, "41041": .1, "4139": .05,
            "2724": .4, "V4582": .15, "412": .1, "4271": .06, "42741": .03},
        px={"3722": .5, "8856": .55, "0066": .55, "3607": .4, "3606": .08, "0045": .35,
            "0046": .1, "0040": .4, "0041": .1, "8853": .3, "3761": .05, "8872": .2},
        text=["STEMI", "CHEST PAIN", "CORONARY ARTERY DISEASE", "NON-ST ELEVATION MYOCARDIAL INFARCTION"]),
    "cardiac_surgery": dict(
        dx={"41401": .85, "4241": .3, "4240": .15, "99811": .08, "E8788": .3, "E8782": .1,
            "9971": .2, "2851": .3, "42731": .25, "V433": .03, "4412": .05, "4233": .03,
            "45829": .2, "2724": .4},
        px={"3961": .9, "3615": .75, "3612": .35, "3613": .3, "3521": .25, "3723": .3,
            "8872": .35, "3891": .4, "9904": .35, "9672": .0},
        text=["CORONARY ARTERY DISEASE\\CORONARY ARTERY BYPASS GRAFT /SDA",
              "AORTIC STENOSIS\\AORTIC VALVE REPLACEMENT /SDA", "MITRAL REGURGITATION;CORONARY ARTERY DISEASE"]),
    "chf": dict(
        dx={"4280": .85, "42731": .45, "42823": .15, "42833": .15, "42832": .1, "42822": .1,
            "4254": .08, "4240": .12, "4168": .06, "V5861": .3, "V4501": .08, "7823": .05, "42732": .06},
        px={"8872": .25},
        text=["CONGESTIVE HEART FAILURE", "ATRIAL FIBRILLATION", "SHORTNESS OF BREATH"]),
    "copd": dict(
        dx={"496": .6, "49121": .35, "3051": .25, "V1582": .3, "32723": .1, "49390": .1, "51883": .08},
        px={"9390": .1},
        text=["COPD EXACERBATION", "SHORTNESS OF BREATH"]),
    "diabetes": dict(
        dx={"25000": .75, "25060": .15, "25040": .1, "25001": .08, "3572": .1, "V5867": .3, "2724": .3},
        px={},
        text=["HYPERGLYCEMIA"]),
    "dka": dict(
        dx={"25013": .9, "2762": .6, "2761": .2, "27651": .3},
        px={},
        text=["DIABETIC KETOACIDOSIS"]),
    "ckd": dict(
        dx={"5859": .45, "40390": .35, "5853": .15, "5854": .1, "5856": .15, "40391": .15,
            "28521": .2, "V4511": .1, "2767": .1},
        px={"3995": .1},
        text=["RENAL FAILURE"]),
    "liver": dict(
        dx={"5715": .5, "5712": .3, "5723": .35, "5722": .25, "5724": .08, "07054": .2,
            "07070": .1, "30390": .2, "78959": .2, "4560": .1, "2875": .3, "2869": .2, "570": .05, "5733": .05},
        px={"5491": .35, "4443": .1, "4516": .1},
        text=["LIVER FAILURE", "CIRRHOSIS", "HEPATIC ENCEPHALOPATHY"]),
    "gi_bleed": dict(
        dx={"5789": .6, "5781": .3, "5780": .2, "2851": .5, "2800": .15, "53081": .15, "4560": .05},
        px={"9904": .7, "4513": .5, "4443": .2, "4523": .2, "4516": .15, "9907": .15},
        text=["GASTROINTESTINAL BLEED", "UPPER GI BLEED", "LOWER GI BLEED"]),
    "neuro": dict(
        dx={"431": .35, "430": .15, "4321": .15, "43491": .25, "43411": .08, "3481": .05,
            "3485": .1, "34831": .1, "78039": .1, "3453": .03, "43310": .05, "78097": .1},
        px={"8703": .4, "0124": .12, "0131": .08, "8891": .2, "9604": .3, "0331": .05},
        text=["INTRACRANIAL HEMORRHAGE", "STROKE", "SUBARACHNOID HEMORRHAGE", "SEIZURE", "ALTERED MENTAL STATUS"]),
    "trauma": dict(
        dx={"85220": .3, "8052": .15, "8054": .1, "80702": .15, "80703": .1, "8600": .15,
            "8208": .15, "85200": .15, "E8859": .25, "E8120": .2, "E8889": .15, "E8490": .2, "E8499": .1},
        px={"8703": .5, "7935": .1, "3404": .15, "8741": .3, "9904": .25, "8151": .05},
        text=["MOTOR VEHICLE ACCIDENT", "S/P FALL", "TRAUMA", "SUBDURAL HEMATOMA"]),
    "cancer": dict(
        dx={"1977": .3, "1970": .25, "1629": .25, "1983": .12, "1985": .1, "20500": .08,
            "20300": .05, "1550": .06, "1579": .06, "1509": .04, "1541": .04, "1749": .05,
            "185": .04, "1991": .04, "E9331": .15, "2639": .15},
        px={"9915": .15, "3893": .3},
        text=["LUNG CANCER", "ACUTE MYELOID LEUKEMIA", "NEUTROPENIC FEVER"]),
    "newborn": dict(
        dx={"V3000": .6, "V3001": .4, "V053": .8, "V290": .5, "7742": .2, "76518": .15, "7706": .1},
        px={"9955": .7, "9983": .15},
        text=["NEWBORN"]),
}
_CLUSTER_NAMES = list(_CLUSTERS)
_ACUTE_CLUSTERS = ["sepsis", "resp_failure", "aki", "acs", "cardiac_surgery", "gi_bleed", "neuro",
                   "trauma", "dka"]
_MISC_PRINCIPAL = [("78650", "CHEST PAIN"), ("78097", "ALTERED MENTAL STATUS"), ("4589", "HYPOTENSION"),
                   ("78900", "ABDOMINAL PAIN"), ("78060", "FEVER"), ("7802", "SYNCOPE"),
                   ("5770", "PANCREATITIS"), ("5609", "SMALL BOWEL OBSTRUCTION")]

# Background comorbidities: code -> (probability at age 65, log-odds change per decade)
_BACKGROUND_DX: dict[str, tuple[float, float]] = {
    "4019": (.38, .35), "2724": (.22, .25), "53081": (.12, .1), "2449": (.08, .2), "311": (.07, -.1),
    "3051": (.07, -.3), "27800": (.04, -.2), "27801": (.03, -.3), "2859": (.14, .1), "2761": (.08, .1),
    "2760": (.06, .2), "2768": (.06, 0), "2875": (.04, 0), "42731": (.14, .5), "4280": (.1, .45),
    "41401": (.14, .4), "412": (.04, .3), "V5861": (.06, .3), "V1582": (.08, 0), "25000": (.14, .1),
    "496": (.06, .3), "71590": (.04, .4), "73300": (.04, .6), "60000": (.04, .5), "3310": (.02, .9),
    "2930": (.05, .4), "2948": (.03, .6), "4439": (.04, .4), "V4581": (.04, .4), "V4582": (.03, .3),
    "V103": (.02, .2), "V1046": (.015, .4), "V1251": (.02, .2), "V1254": (.02, .4), "V5866": (.04, .3),
    "E9342": (.015, .3), "E9320": (.015, 0), "99859": (.01, 0), "E8798": (.02, 0), "4589": (.05, .1),
    "45829": (.02, 0), "70703": (.02, .4), "2749": (.02, .3), "30000": (.04, -.2), "5119": (.04, .1),
    "78820": (.02, .3), "2752": (.03, 0), "27541": (.02, 0), "28529": (.02, .2), "4400": (.02, .4),
    "44021": (.01, .4), "4414": (.01, .5), "4160": (.015, .1), "V440": (.01, 0), "V4986": (.02, .6),
    "5589": (.02, 0), "78791": (.02, 0), "4580": (.015, .4), "9961": (.01, 0), "9975": (.01, .2),
    "99812": (.01, 0), "29181": (.02, -.5), "30500": (.03, -.5), "E8497": (.01, .5), "34830": (.01, .3),
}

_BACKGROUND_PX: dict[str, float] = {
    "3893": .25, "966": .08, "9904": .1, "9915": .03, "3891": .05, "8962": .02, "8964": .02,
    "4311": .02, "8628": .01, "8622": .01, "5123": .01, "5110": .01, "4573": .01, "5411": .01,
    "3844": .005, "3971": .005, "3950": .01, "3778": .01, "9960": .01, "9962": .01, "9905": .03,
}

_ETHNICITIES = ["WHITE", "BLACK/AFRICAN AMERICAN", "HISPANIC OR LATINO", "ASIAN", "OTHER",
                "UNKNOWN/NOT SPECIFIED", "UNABLE TO OBTAIN", "PATIENT DECLINED TO ANSWER",
                "HISPANIC/LATINO - PUERTO RICAN", "ASIAN - CHINESE", "WHITE - RUSSIAN",
                "BLACK/CAPE VERDEAN", "MULTI RACE ETHNICITY", "AMERICAN INDIAN/ALASKA NATIVE"]
_ETHNICITY_P = [.70, .09, .025, .025, .025, .07, .015, .01, .01, .008, .008, .006, .004, .004]
_INSURANCE = ["Medicare", "Private", "Medicaid", "Government", "Self Pay"]
_LANGUAGES = ["ENGL", "SPAN", "RUSS", "PTUN", "CANT", "HAIT", None]
_LANGUAGE_P = [.86, .04, .02, .015, .01, .01, .045]
_RELIGIONS = ["CATHOLIC", "NOT SPECIFIED", "UNOBTAINABLE", "PROTESTANT QUAKER", "JEWISH", "OTHER",
              "EPISCOPALIAN", "GREEK ORTHODOX", "CHRISTIAN SCIENTIST", "BUDDHIST", "MUSLIM", None]
_RELIGION_P = [.35, .2, .13, .12, .08, .04, .015, .01, .01, .005, .005, .035]
_MARITAL = ["MARRIED", "SINGLE", "WIDOWED", "DIVORCED", "SEPARATED", "UNKNOWN (DEFAULT)", "LIFE PARTNER", None]
_MARITAL_P = [.46, .24, .13, .06, .01, .005, .001, .094]
_ADM_LOCATIONS = ["EMERGENCY ROOM ADMIT", "TRANSFER FROM HOSP/EXTRAM", "CLINIC REFERRAL/PREMATURE",
                  "PHYS REFERRAL/NORMAL DELI", "TRANSFER FROM SKILLED NUR", "TRANSFER FROM OTHER HEALT"]
_DISCH_LOCATIONS = ["HOME", "HOME HEALTH CARE", "SNF", "REHAB/DISTINCT PART HOSP", "LONG TERM CARE HOSPITAL",
                    "SHORT TERM HOSPITAL", "DISC-TRAN CANCER/CHLDRN H", "HOSPICE-HOME",
                    "LEFT AGAINST MEDICAL ADVI", "DEAD/EXPIRED"]
_DISCH_P = [.3, .26, .2, .12, .04, .03, .02, .02, .01]
_CAREUNITS = ["MICU", "SICU", "CSRU", "CCU", "TSICU", "NICU"]
_ADMISSION_TYPES = ["EMERGENCY", "ELECTIVE", "URGENT", "NEWBORN"]
_DBSOURCES = ["carevue", "metavision"]
_RESULTSTATUS = [None, "Manual", "Final"]
_STOPPED = ["NotStopd", "D/C'd", None]
_LAB_TEXT = ["UNABLE TO REPORT", "COMPUTER NETWORK FAILURE. TEST NOT RESULTED.", "LESS THAN 0.4",
             "GREATER THAN 500", "HEMOLYZED SPECIMEN"]

# Mortality model intercept, calibrated once so the in-hospital death rate of adult
# admissions is about 10 % (see tests/test_synthetic_hospital.py for the accepted band).
_MORTALITY_INTERCEPT = -3.0
