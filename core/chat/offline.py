"""The offline answerer: answers a 申论 question from the candidate's own material, with
no model, deterministically.

It is extractive and says so (`OFFLINE_NOTICE`). 审题 first: a 题目 that names its
sections (根据“给定资料3～4”) is answered from those sections only. Sentences that carry
what the 题目 asks are found by cue words, cut to their clauses, compressed and
numbered; nothing is invented but the connecting words of a format (倡议书's 为此，
我们倡议, 讲话稿's 谢谢大家). Per type:

* 归纳概括 — the clauses carrying the asked 问题/原因/做法/成效 become 关键词：说明
  points in the material's words, merged when they repeat, fitted to the limit;
  a compound question (问题及原因) gets labelled parts.
* 提出对策 — each problem is paired with a measure: an experience of the material
  (经验借鉴, 建议) that shares its words, else the problem turned round (问题反推:
  不足→补齐, 单一→丰富…), written 主体＋措施＋目的 in the role the 题目 names.
* 应用文 — the asked 文种's skeleton (标题、称谓、正文、号召、落款 ×年×月×日) filled
  with the material's problems and measures.
* 综合分析 / 文章 — labelled outlines (观点—分析—落脚; 总论点 + three 分论点).
* no material — the mode's method and the knowledge passages cleaned of Markdown,
  cut at sentence ends; greetings get a greeting.

Pure string work on bounded input (the material is at most 50 000 characters; the
keyword count reads its first `KEYWORD_SPAN`): the provider runs it off the loop.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, replace

from core.chat.prompts import (
    MODES,
    Prompt,
    PromptBook,
    TaskSpec,
    asked_sections,
    band,
    default_book,
    read_task,
    section_number,
)
from core.chat.wordlimit import char_count, strip_markdown, trim_to_limit

OFFLINE_NOTICE = {
    "extractive": ("离线模式：未配置大模型。本答案由程序从给定资料中按题型规则摘取原句、压缩、编号而成"
                   "（抽取式；资料过短时以知识库中的同类做法补足），没有经过大模型的理解与改写，"
                   "请对照资料核对、润色后再用。"),
    "outline": ("离线模式：未配置大模型。以下是程序依据给定资料摘取生成的作答提纲（抽取式），"
                "需要考生据此展开成文。"),
    "method": ("离线模式：未配置大模型。以下是答题方法和知识库摘录，不是大模型针对本题的作答；"
               "设置 OPENAI_API_KEY / OPENAI_BASE_URL 后可获得完整作答。"),
}
KEYWORD_SPAN = 8_000
METHOD_EXCERPT_CHARS = 220

# --- cue words (what a clause says) ---

PROBLEM_CUES = ("不足", "不够", "不高", "不强", "不明确", "不清", "不便", "不方便", "不理想", "不畅", "不力",
                "不严", "不到位", "不会", "不懂", "不爱", "不知道", "不清楚", "不愿", "不想", "缺乏", "缺少",
                "短缺", "欠缺", "单一", "滞后", "跟不上", "落后", "老化", "脱节", "空白", "难以", "困难", "难题",
                "薄弱", "推诿", "互相推", "踢皮球", "扯皮", "混投", "混装", "混运", "随意", "同质化", "雷同",
                "冷冷清清", "隐忧", "浪费", "拥堵", "狭窄", "直排", "只能", "只靠", "主要靠", "没有", "没人",
                "无人", "无法", "停留在", "流于形式", "留不住", "招不来", "上不去", "卖不出去", "没人买", "差不多",
                "看不出", "嫌", "担心", "发愁", "无奈", "抱怨", "不满", "意见很大", "说了算", "折腾", "只提供",
                "各管一摊", "缓慢", "不归", "拖着", "推着", "分不清", "多此一举", "白分", "满溢", "味道", "老旧", "噱头",
                "助长", "讲排场", "过量", "倒掉", "扔掉", "剩下", "没动", "常事", "一哄而上", "空着", "碰壁",
                "紧张", "被拒", "重复", "没兑现", "少有人知", "拼价格", "抢原料", "外流", "答非所问", "等很久",
                "不高", "年久失修", "失修", "隐患", "堵住", "堵塞", "积水", "锈迹", "冷清", "撤并", "独自",
                "凑合", "时有时无", "卡顿", "虚假", "以次充好", "货不对板", "投诉", "差评", "坏了", "噪声", "噪音",
                "占道", "违规", "不顺畅", "难处", "欺凌", "不敢", "无从下手", "较少", "沉迷", "通宵", "私拉", "私自", "乱停", "飞线", "三无", "图省事", "偷偷", "堆放", "找不到", "批不下来", "压价", "所剩无几", "一等就是",
                "低", "少", "难", "缺", "只", "无", "不", "乱", "弱", "偏", "过度", "严重")
CAUSE_CUES = ("因为", "由于", "原因", "导致", "造成", "致使", "所以", "缺乏", "没有", "意识", "观念", "机制",
              "投入", "不足", "不够", "不明确")
PRACTICE_CUES = ("建立", "建起", "推行", "实行", "实施", "开展", "引入", "引进", "成立", "召开", "设置",
                 "设立", "推动", "推进", "组织", "统筹", "创新", "探索", "制定", "出台", "举办", "提供", "开设",
                 "选聘", "招募", "指导", "改建", "腾出", "合作", "开发", "整治", "打造", "搭建", "完善", "健全",
                 "优化", "简化", "培训", "补贴", "补助", "激励", "公开", "公示", "监督", "考核", "回访", "挂钩",
                 "牵头", "会商", "一是", "二是", "三是", "通过", "采取", "鼓励", "支持", "聘请", "邀请", "带头",
                 "上门", "入户", "走访", "投票", "签约", "对接", "联合", "推出", "抱团", "统一", "一次办好", "一次施工", "引导",
                 "要求", "形成", "转向", "列成", "决定", "调整", "带着", "优先", "提醒", "打包", "兑换",
                 "上线", "列出", "提示", "转成", "提炼", "推荐", "生成", "规定", "保留", "脱敏", "审核",
                 "合并", "压缩", "精简", "清理", "取消", "重申", "开通", "核查", "通报", "查摆", "整改", "督促",
                 "协调", "对照", "调研", "配备", "增设", "安装", "试点", "推广", "设置", "聘", "派驻", "跟踪",
                 "改成", "建设", "注册", "吸纳", "流转", "入股", "贴息", "免租", "担保", "检测",
                 "分级", "溯源", "预冷", "牵头", "授信", "排查", "划定", "约定", "公约", "错峰", "新建", "组成",
                 "巡查", "劝导", "免费", "覆盖到", "纳入", "延长", "利用", "倡导")
EFFECT_CUES = ("明显", "显著", "提升", "提高", "增加", "减少", "下降", "增长", "改善", "受欢迎", "满意", "变化",
               "如今", "成效", "效果", "带动", "实现", "亮了", "解决", "好转", "倍", "%", "成为", "办到", "订单")
ADVICE_CUES = ("建议", "希望", "应该", "应当", "关键是", "要让", "要努力", "最好", "可以借鉴", "借鉴", "值得",
               "下一步", "打算", "计划")
# Problem shapes a word list cannot hold: 批不下来 / 招不到 / 进不来 (a verb with a
# negated result), 比县城高出一截 (worse than), 盖好几个章 (too many), 越来越空, 偏大.
_PROBLEM_SHAPES = re.compile(r"[\u4e00-\u9fff]不(?:到|下来|下去|进来|进去|起来|上来|出来|动|好|住|起|了|够|着)|"
                             r"比[^，。；]{1,10}(?:高|贵|慢|难|差|低|少|长|远)|好几(?:个|遍|次|趟|天)|"
                             r"越来越(?:少|空|难|差|冷清|老|贵|低|弱)|偏(?:大|高|少|低|弱|小|多|远)|太(?:大|小|多|少|高|贵|远|慢|吵|乱|差|晚)|"
                             r"(?:被|遭)[^，。；]{0,8}(?:堵|占|拒|压|坏|骗)")
_NOT_PROBLEM = ("不少", "不仅", "不断", "不同", "不过", "不管", "不论", "少数", "无论", "不久", "难忘", "只要",
                "只有", "低偿", "减少", "不要紧", "不允许", "不再", "不浪费", "还不浪费", "不是不想")
_REPORTING = re.compile(r"(?:记者|工作人员|负责人|居民|村民|专家|老人|游客|市民|书记|站长|经理|店主|民宿主|"
                        r"老艺人|师傅|阿姨|大爷|先生|女士|小\w|一位|有的|有人)[^，。]{0,12}(?:说|表示|介绍|坦言|"
                        r"指出|认为|抱怨|感慨|反映|发现|留言说|建议|看到)$|^(?:记者|他|她)[^，。]{0,16}(?:看到|发现|走访)")
# A quoted remark, not a quoted name (“共同配送”): it has a sentence's punctuation inside.
_SPEECH = re.compile(r"“[^”]*[，。！？；][^”]*”")
# 有的把车推进电梯: what some people do is a case of the problem, never a practice.
_CASES = ("有的", "有人", "少数", "个别")
_IFS = ("一旦", "如果", "虽然", "即使", "要是", "假如")  # what might be, not what was done
# A clause that only introduces what follows (Z县县委要求, 消防部门提醒): no content.
_INTRODUCER = re.compile(r"^[^，。；]{0,8}(?:要求|提醒|强调|指出|表示|认为|介绍|坦言|说|发现|开始探索|开始尝试|提出了?建议)$")
_LEAD = re.compile(r"^(?:但是?|而且?|可是|不过|因为|由于|是|此外|另外|同时|还有|并且|其中|原来|虽然|然而|因此|所以|"
                   r"于是|后来才知道|才知道|认为|表示|指出|还|也|都|就|又|再|比如|例如|如(?![果今何此])|即|结果|后来|目前|现在|如今|过去|近几年|近两年|"
                   r"可(?![以能供])|去年起|前年起|为此|对此|另一方面|一方面|首先|其次|最后|一是|二是|三是|四是|将)[，,]?")
# A section heading of the 给定资料: 资料1 / 【给定资料二】 / 材料3： alone on its line.
_HEADING = re.compile(r"^\s*[【\[（(]?\s*(?:给定)?(?:资料|材料)\s*([0-9０-９一二三四五六七八九十]{1,3})\s*[】\]）)]?\s*[：:]?\s*$")
_STOP_CHARS = set("的了是在和也都就不我有这一他她们你着说要会到为把被让给对从与及或而但等个中上下里年月日")


# --- splitting ---

def material_sections(material: str) -> dict[int, str]:
    """The material's numbered sections (资料1 …), by number; {} when it has no headings
    (text before the first heading is left out of the sections)."""
    sections: dict[int, list[str]] = {}
    current: list[str] | None = None
    for line in material.splitlines():
        head = _HEADING.match(line)
        if head:
            current = sections.setdefault(section_number(head.group(1)), [])
        elif current is not None:
            current.append(line)
    return {n: "\n".join(lines).strip() for n, lines in sections.items()}


def scoped_material(material: str, sections: tuple[int, ...]) -> str:
    """The part of the material a 题目 confines the answer to (根据给定资料3 → section
    3), headings kept; the whole material when the 题目 names no section or the
    material has none of the named ones."""
    if not sections:
        return material
    found = material_sections(material)
    named = [n for n in sections if found.get(n)]
    if not named:
        return material
    return "\n".join(f"资料{n}\n{found[n]}" for n in named)


def material_sentences(material: str) -> list[str]:
    """The material's sentences, headings (资料1) dropped, quotes kept as text."""
    out: list[str] = []
    for line in material.splitlines():
        if not line.strip() or _HEADING.match(line):
            continue
        # A ； ends a unit too: the items of a list (一是…；二是…) are points of their own.
        for sent in re.split(r"(?<=[。！？!?；;])(?![”’\"])|(?<=[。！？!?；;][”’\"])", line.strip()):
            if char_count(sent) >= 4:
                out.append(sent.strip())
    return out


def clauses(sentence: str) -> list[str]:
    """A sentence's clauses, quote marks and reporting clauses (记者看到, 他说) out."""
    parts = re.split(r"[，,；;。！？!?：:]", sentence.replace("“", "").replace("”", "")
                     .replace("‘", "").replace("’", "").replace("「", "").replace("」", ""))
    kept = []
    for part in parts:
        part = part.strip(" 　\"'（）()…")
        if len(part) < 2 or _REPORTING.search(part) or _INTRODUCER.match(part):
            continue
        kept.append(part)
    return kept


def compress(clause: str) -> str:
    """A clause without its leading connectives (但、此外、原来…)."""
    previous = None
    while previous != clause:
        previous, clause = clause, _LEAD.sub("", clause).strip()
    return clause


def cue_score(text: str, cues: tuple[str, ...]) -> float:
    """How strongly a clause says what the cues name: two-character cues count 1,
    one-character ones 0.3 (不, 难 are everywhere)."""
    shapes = 0.0
    if cues is PROBLEM_CUES:
        for word in _NOT_PROBLEM:
            text = text.replace(word, "")
        shapes = float(len(_PROBLEM_SHAPES.findall(text)))
    return shapes + sum((1.0 if len(c) > 1 else 0.3) for c in cues if c in text)


def bigrams(text: str) -> set[str]:
    han = "".join(ch for ch in text if "\u4e00" <= ch <= "\u9fff")
    return {han[i:i + 2] for i in range(len(han) - 1) if not (set(han[i:i + 2]) & _STOP_CHARS)}


def overlap(a: str, b: str) -> float:
    x, y = bigrams(a), bigrams(b)
    return len(x & y) / max(1, min(len(x), len(y)))


def material_keywords(material: str, limit: int = 8) -> list[str]:
    """The material's most repeated terms (2–4 character runs of Chinese seen at least
    twice, longest kept when a shorter one only occurs inside it)."""
    text = material[:KEYWORD_SPAN]
    counts: Counter[str] = Counter()
    for run in re.findall(r"[\u4e00-\u9fff]{2,}", text):
        for size in (2, 3, 4):
            for i in range(len(run) - size + 1):
                gram = run[i:i + size]
                if gram[0] in _STOP_CHARS or gram[-1] in _STOP_CHARS:
                    continue
                counts[gram] += 1
    ranked = sorted((g for g, n in counts.items() if n >= 2), key=lambda g: (-counts[g] * len(g), g))
    chosen: list[str] = []
    for gram in ranked:
        if any(gram in c and counts[c] >= counts[gram] * 0.7 for c in chosen):
            continue
        chosen = [c for c in chosen if not (c in gram and counts[gram] >= counts[c] * 0.7)]
        chosen.append(gram)
        if len(chosen) >= limit * 2:
            break
    if not chosen:  # a two-line material repeats nothing: its clauses are its terms
        chosen = [term for sent in material_sentences(text) for c in clauses(sent)
                  if 2 <= len(term := _term_of(c)) <= 12]
    return chosen[:limit]


def _term_of(clause: str) -> str:
    """The subject of a clause: 某县农村垃圾分类推进缓慢 → 农村垃圾分类."""
    text = re.sub(r"^某[县市区镇村乡]", "", compress(clause))
    cuts = [text.find(c) for c in PROBLEM_CUES + ("推进",) if len(c) > 1 and text.find(c) > 0]
    return text[:min(cuts)] if cuts else text


_BOILERPLATE = re.compile(
    r"[（(]\s*\d+\s*分\s*[)）]|要求[：:].*$|(?:请|试)?(?:根据|结合|参考|阅读|依据)(?:给定)?资料\s*[\d、和与至～\-]*|"
    r"(?:假如|假设|如果)?你是[^，,。]*[，,]|以[^，,。]{2,20}?(?:的)?名义|请你?|谈谈你?对|你对|"
    r"拟写一份|写一份|写一篇|拟一份|撰写|起草|一份|一篇|提出|概括|归纳|分析|说明|指出|给定资料|资料中|"
    r"存在的|相关的|有关的|的问题|问题|对策|建议|措施|做法|经验|原因|理解|看法|这句话|的?工作人员|针对|"
    r"解决|围绕|按要求|作答|回答|怎么|如何|怎样|"
    r"[“”\"'《》，,。；;：:？?！!、\s]", re.S)


def task_focus(task: str) -> str:
    """The core of a 题目: its subject words, boilerplate (根据给定资料, 请, 要求…,
    题型 verbs) taken out."""
    return re.sub(r"\s+", " ", _BOILERPLATE.sub(" ", task)).strip()


def retrieval_query(question: str, task: str, material: str) -> str:
    """What to search the knowledge base for: the focus of the 题目 (or of a long
    question), the 文种 or type words it names, and the material's keywords."""
    asked = task or question
    words = [w for w in task_focus(asked).split() if len(w) >= 2] if len(asked) > 12 or task else [asked]
    words += [w for w in ("倡议书", "讲话稿", "公开信", "调研报告", "简报", "新闻稿", "情况说明", "工作方案",
                          "宣传稿", "编者按", "对策", "概括", "综合分析", "理解", "启示", "文章", "立意")
              if w in asked]
    if task and question and question != task:
        words += [w for w in task_focus(question).split() if len(w) >= 2]
    if material:  # the keywords of the sections the 题目 names (根据给定资料3), else of all
        words += material_keywords(scoped_material(material, asked_sections(asked)), 3)
    return " ".join(dict.fromkeys(w for w in words if w))


# --- points ---

@dataclass
class Point:
    head: str             # the 关键词 part
    detail: str           # the 说明 part (may be empty)
    order: int            # where it comes from in the material
    weight: float
    answers_problem: bool = False   # a measure turned round from a problem (问题反推)

    def text(self, with_detail: bool = True) -> str:
        if with_detail and self.detail and self.detail not in self.head:
            return f"{self.head}：{self.detail}"
        return self.head


def _cues_for(kind: str) -> tuple[str, ...]:
    return {"problem": PROBLEM_CUES, "cause": CAUSE_CUES, "effect": EFFECT_CUES}.get(kind, PRACTICE_CUES)


_KINDS = (("problem", ("问题", "困难", "不足", "短板", "表现", "危害", "隐忧", "难点", "痛点")),
          ("cause", ("原因", "为什么", "根源")),
          ("effect", ("成效", "变化", "影响", "意义", "作用", "效果", "好处", "成果")),
          ("practice", ("做法", "经验", "举措", "措施", "办法", "如何", "怎样", "特点", "路径")))
_LABELS = {"problem": "问题", "cause": "原因", "effect": "成效", "practice": "做法"}


def asked_kinds(task: str, spec: TaskSpec) -> list[str]:
    """What the 题目 asks for, in its order (问题 / 原因 / 成效 / 做法)."""
    asked = re.split(r"要求[：:]", task, maxsplit=1)[0]
    found = sorted(((min(asked.find(c) for c in cues if c in asked), kind)
                    for kind, cues in _KINDS if any(c in asked for c in cues)))
    kinds = [kind for _, kind in found]
    if spec.labels:
        label_kinds = [kind for label in spec.labels for kind, cues in _KINDS if label in cues]
        kinds = list(dict.fromkeys(label_kinds)) or kinds
    return kinds[:2] if spec.labels else kinds[:1]


def extract_points(sentences: list[str], kind: str, *, exclude: set[int] | frozenset[int] = frozenset(),
                   least: float = 0.6) -> list[Point]:
    """One point per sentence that carries `kind` (cue score ≥ `least`): its strongest
    clause is the head, the other carrying clauses the detail; repeats merged."""
    cues = _cues_for(kind)
    points: list[Point] = []
    for n, sent in enumerate(sentences):
        if n in exclude:
            continue
        if kind == "practice":  # what people say (“补贴虽然不能解决所有问题，但…”) is not what was done
            sent = _SPEECH.sub("", sent)
        parts = [compress(c) for c in clauses(sent)]
        parts = [c for c in parts if len(c) >= 2 and not (kind == "practice" and c.startswith(_CASES + _IFS))
                 and not (kind == "problem" and _ACTS_ON.search(c))]
        scored = [(cue_score(c, cues), i, c) for i, c in enumerate(parts)]
        carrying = [(s, i, c) for s, i, c in scored if s >= least]
        if not carrying:
            continue
        total = sum(s for s, _, _ in carrying)
        # The head is the strongest clause that says something (Z县县委要求 does not).
        head_i = max(carrying, key=lambda t: (len(t[2]) >= 6, t[0], -len(t[2])))[1]
        head = parts[head_i]
        # 公务接待方面，… : the sentence names its field first, the point's 关键词.
        if head_i > 0 and parts[0].endswith("方面") and len(parts[0]) <= 10:
            head = parts[0] + "，" + head
        # A short predicate clause (形式单一) reads better with its subject clause.
        if len(head) <= 6 and head_i > 0 and char_count(parts[head_i - 1]) <= 16:
            head = parts[head_i - 1] + "，" + head
        detail = "，".join(c for s, i, c in carrying if i != head_i and c not in head)
        point = Point(head=head, detail=detail, order=n, weight=total)
        twin = next((p for p in points if overlap(p.text(), point.text()) >= 0.6), None)
        if twin is not None:
            if point.weight > twin.weight:
                points[points.index(twin)] = point
            continue
        points.append(point)
    return points


def fit_points(points: list[Point], budget: int, per_point_cost: int = 3,
               most: int = 10) -> list[tuple[Point, bool]]:
    """At most `most` points that fit `budget` characters, strongest first, shown in
    material order; (point, with its detail). Details are added while the budget allows."""
    ranked = sorted(points, key=lambda p: (-p.weight, p.order))
    chosen: list[Point] = []
    used = 0
    for p in ranked:
        cost = char_count(p.head) + per_point_cost
        if used + cost <= budget and len(chosen) < most:
            chosen.append(p)
            used += cost
    detail: dict[int, bool] = {}
    for p in sorted(chosen, key=lambda p: (-p.weight, p.order)):
        extra = char_count(p.text()) - char_count(p.head)
        if extra and used + extra <= budget:
            detail[id(p)] = True
            used += extra
    chosen.sort(key=lambda p: p.order)
    return [(p, detail.get(id(p), False)) for p in chosen]


def numbered(items: list[str]) -> list[str]:
    return [f"{n}. {item.rstrip('。；;，,')}。" for n, item in enumerate(items, 1)]


# --- turning a problem round (问题反推) ---

# (cue, measure): {s} is what comes before the cue in the clause (its subject), {r}
# what follows it. Longer cues first: 不够明确 before 不够.
_INVERSE = (("年久失修", "修缮{s}"), ("一等就是", "缩短{s}时限"), ("没人", "明确专人{r}{s}"),
            ("没有人", "明确专人{r}"), ("太大", "控制{s}"), ("较少", "加强{s}"), ("违规", "依法查处{s}违规{r}"), ("不知道", "向{s}讲清{r}"), ("条件差", "改善{s}条件"), ("一模一样", "突出特色、避免同质化"),
            ("跟不上", "完善{s}"), ("占道", "治理{s}占道{r}"), ("高出", "降低{s}"), ("同质化", "突出特色、避免同质化"), ("混装混运", "配齐分类收运车辆，杜绝混装混运"),
            ("不够明确", "明确{s}"), ("不明确", "明确{s}"), ("推进缓慢", "加快推进{s}"), ("不清楚", "明确{r}"), ("衔接不畅", "畅通{s}衔接"),
            ("不畅", "畅通{s}"), ("各管一摊", "推动{s}协同合作"), ("几乎是空白", "填补{s}空白"),
            ("是空白", "填补{s}空白"), ("空白", "填补{s}空白"), ("招不来", "让{s}引得来、留得住"),
            ("留不住", "让{s}引得来、留得住"), ("滞后", "加快完善{s}"),
            ("不足", "补齐{s}短板"), ("不够", "增加{s}"), ("单一", "丰富{s}"), ("不高", "提高{s}"),
            ("不强", "增强{s}"), ("上不去", "提高{s}"), ("卖不出去", "拓宽{s}销路"), ("没人买", "拓宽{s}销路"),
            ("销路", "拓宽{s}销路"), ("狭窄", "拓宽{s}"), ("老化", "更新改造{s}"), ("脱节", "推动{s}衔接"),
            ("随意", "规范{s}"), ("推诿", "明确{s}责任、防止推诿"), ("互相推", "明确{s}责任、防止推诿"),
            ("直排", "治理{s}直排"), ("缺乏", "加强{r}"), ("缺少", "补上{r}"), ("没有经过", "开展{r}"),
            ("只提供", "丰富{s}服务内容，不只提供{r}"), ("频次低", "提高{s}频次"), ("老龄化", "培养{s}新人"))
_PRONOUN = re.compile(r"[我你他她它]|大家|自己|这些|那些|什么")
_SUBJECT_FILLER = re.compile(r"^(?:某[县市区镇村乡]|可|不少|一些|部分|有的|有时|很多|许多|大多|个别|目前|当前|全县|全市|全镇)|"
                             r"(?:几乎|基本|根本|也|都|还|很|较|比较|的|了|是|得)+$")


# 贷款批不下来 → 确保贷款批得下来: a verb with a negated result, turned positive.
_CANNOT = re.compile(r"^(?P<s>[^，。；、不]{2,14}?)(?P<v>[\u4e00-\u9fff])不(?P<r>到|下来|进来|上来|出来|好|住|动|起)"
                     r"(?P<o>[^，。；、是的]{0,6})$")


def invert(clause: str) -> str | None:
    """A measure that answers a problem clause (宣传形式单一 → 丰富宣传形式), or None
    when the clause does not read as a subject and a problem word. Problems listed
    with 、 (村道年久失修、饮水设施老化) are turned round one by one."""
    # 网吧存在违规接纳未成年人的情况: the problem is what 存在 wraps.
    text = re.sub(r"存在(.{2,16}?)的?(?:情况|问题|现象)$", r"\1", compress(clause))
    if _PRONOUN.search(text) or char_count(text) > 24:
        return None
    parts = [part for part in text.split("、") if part]
    if len(parts) > 1 and all(len(part) >= 4 for part in parts):
        turned = [invert(part) for part in parts]
        if all(turned):
            return "、".join(t for t in turned if t)
    for cue, measure in _INVERSE:
        at = text.find(cue)
        if at < 0:
            continue
        # 物流成本比县城高出一截: the subject ends where the comparison starts.
        subject = _SUBJECT_FILLER.sub("", _SUBJECT_FILLER.sub("", re.sub(r"比[^，,]*$", "", text[:at].strip("，, "))))
        rest = text[at + len(cue):].strip("，, 了的")
        if ("{s}" in measure and not 2 <= len(subject) <= 16) or ("{r}" in measure and not 2 <= len(rest) <= 14):
            continue
        if subject.endswith(("来", "去", "出", "说", "要")):
            continue
        return measure.replace("{s}", subject).replace("{r}", rest)
    cannot = _CANNOT.match(text)
    # 不到三成 is a quantity, not a verb that fails; 吵得老人睡不好 is about the 老人.
    if (cannot and cannot["v"] not in "的得地了是有" and not re.match(r"[\d一二三四五六七八九十两几半百千万成]", cannot["o"])):
        cause, _, sufferer = cannot["s"].rpartition("得")
        subject = _SUBJECT_FILLER.sub("", sufferer)
        if len(subject) < 2:
            return None
        # 噪声吵得老人睡不好: what does the harm (噪声) is what the measure controls.
        cause = cause[:-1] if len(cause) >= 3 else ""
        return (f"控制{cause}，" if cause else "") + f"确保{subject}{cannot['v']}得{cannot['r']}{cannot['o']}"
    return None


def _subject(spec: TaskSpec) -> str:
    role = spec.signer or spec.role
    return role if role and len(role) <= 12 else "相关部门"


# --- the answers ---

def summarize_answer(prompt: Prompt, spec: TaskSpec) -> str:
    sents = material_sentences(prompt.material)
    limit = spec.limit or 300
    kinds = asked_kinds(prompt.task or prompt.question, spec) or ["practice"]
    low, high = band(limit, spec.low)
    target = min(high, int(low + (high - low) * 0.5))
    lines: list[str] = []
    used: set[int] = set()
    per_part = target // len(kinds)
    # A sentence that restates the 题目 (全党开展…学习教育) is its background, not a point.
    focus = task_focus(prompt.task or prompt.question)
    # (A focus of a word or two, 某市, would match every sentence: only a real restatement counts.)
    used = {n for n, sent in enumerate(sents) if len(bigrams(focus)) >= 4 and overlap(sent, focus) >= 0.7}
    for kind in kinds:
        points = extract_points(sents, kind, exclude=used)
        if sum(char_count(p.text()) for p in points) < per_part:  # thin: weaker cues too
            points = extract_points(sents, kind, exclude=used, least=0.3)
        used |= {p.order for p in points}
        label = f"{_LABELS[kind]}：" if len(kinds) > 1 else ""
        budget = per_part - char_count(label) - 4
        chosen = fit_points(points, budget, most=spec.points[1] + 2 if spec.points else 10)
        if label:
            lines.append(label)
        lines += numbered([p.text(full) for p, full in chosen])
    return trim_to_limit("\n".join(lines), limit)


# 人社部门表示，将开展技能培训: what an office says it will do is a plan (advice).
_PLAN = re.compile(r"(?:^|[，,：:])(?:将|准备|拟)(?:进一步|继续|加快|全面)?(?:开展|推动|建立|出台|探索|加大|推进|实施|设立|组织)")
# 对…开展专项检查 / 针对…推出: a clause that acts on a problem is a measure, not the problem.
_ACTS_ON = re.compile(r"(?:对|针对)[^，,。]{2,20}(?:开展|进行|实施|加强|推出|建立)|"
                      r"^(?:依法)?(?:查处|整治|打击|严查|治理|整改|杜绝|防止|禁止|严禁)")
_META = re.compile(r"借鉴|做法或许|倡议|讲话|座谈会|这封信|公开信|调研报告|工作方案|情况说明|简报|新闻稿")


def _experiences(sents: list[str], task: str = "") -> list[tuple[str, int, bool]]:
    """Clauses that describe a measure worth copying (practices; in advice and plans,
    下一步打算…, every clause that names no problem), with the index of their sentence
    and whether it is advice; first-person remarks, problem clauses and the 题目's
    own situation (the meeting it asks a speech for) left out."""
    found: dict[str, tuple[int, bool]] = {}
    for n, sent in enumerate(sents):
        advice = cue_score(sent, ADVICE_CUES) > 0 or "借鉴" in sent or bool(_PLAN.search(sent))
        for clause in clauses(sent):
            clause = compress(clause)
            if (len(clause) < 4 or char_count(clause) > 30 or re.search(r"[我你]", clause)
                    or clause.startswith(_IFS + _CASES)
                    or (task and overlap(clause, task) >= 0.6) or _META.search(clause)):
                continue
            practice = cue_score(clause, PRACTICE_CUES) >= 1
            # 对平台随意罚款等行为开展专项检查: the problem is what the measure acts on.
            if cue_score(clause, PROBLEM_CUES) >= 1 and not _ACTS_ON.search(clause):
                continue
            # A practice inside a problem's sentence (卖给上门收购的茶贩，每斤只能卖十几元)
            # is part of the problem, unless the sentence tells what it achieved.
            told = cue_score(sent, PROBLEM_CUES) < 1 or cue_score(sent, EFFECT_CUES) >= 1
            if (practice and (advice or told)) or (advice and len(clause) >= 6):
                found.setdefault(clause, (n, advice))
    return [(clause, n, advice) for clause, (n, advice) in found.items()]


def measures(prompt: Prompt, spec: TaskSpec) -> list[Point]:
    """The measures of the material as points (head 关键词, detail 怎么做＋目的): each
    problem turned round (问题反推) and paired with an experience that shares its
    words (经验借鉴); experiences nobody paired follow as measures of their own."""
    sents = material_sentences(prompt.material)
    problems = sorted(extract_points(sents, "problem"), key=lambda p: (-p.weight, p.order))
    experiences = _experiences(sents, prompt.task or prompt.question)
    taken: set[str] = set()
    out: list[Point] = []
    sentence_of = {e: n for e, n, _ in experiences}
    aims = 0

    def siblings(exp: str) -> list[str]:
        """The other practice clauses of an experience's sentence: they say how
        (一是…二是… in one sentence); taken with it."""
        more: list[str] = []
        for e, m, _ in experiences:
            if m == sentence_of[exp] and e not in taken and e != exp and char_count("".join(more) + e) <= 60:
                more.append(e)
        taken.update(more)
        return more

    for problem in problems:
        carrying = [c for c in problem.text().replace("：", "，").split("，") if cue_score(c, PROBLEM_CUES) >= 1]
        turned: list[tuple[str, str | None]] = [(c, invert(c)) for c in carrying if invert(c)][:2]
        turned = turned or [(carrying[0] if carrying else "", None)]
        for nth, (clause, key) in enumerate(turned):
            # The experience that shares the problem's words (贷款批不下来 ↔ 创业担保贷款):
            # by its sentence, or — a weaker tie — by the problem clause alone.
            pool = [(max(overlap(sents[problem.order], e), overlap(clause, e) * 0.8 if clause else 0.0), e)
                    for e, _, _ in experiences if e not in taken]
            score, how = max(pool, default=(0.0, ""))
            how = how if score >= 0.3 else ""
            if key is None and not how:
                continue
            more: list[str] = []
            if how:
                taken.add(how)
                more = siblings(how)
            turned_round = key is not None
            key = key or how
            if any(overlap(key, p.head) >= 0.7 for p in out):
                continue
            # A measure says what to do; naming the problem it answers is its 针对性, as
            # long as the problem does not outweigh the measure (改变村道年久失修的状况
            # after a short key reads to an examiner as one more problem).
            aim = clause if clause and not _PRONOUN.search(clause) and "要" not in clause and char_count(clause) <= 16 else ""
            # …and a 对策 answer must not read as a list of problems: at most every other point names one.
            named = (aim and not how and char_count(key) * 5 >= char_count(aim) * 3 and cue_score(aim, PROBLEM_CUES) <= 2
                     and aims * 2 < len(out) + 1)
            aims += bool(named)
            aim = f"切实解决{aim}的问题" if named else ""
            detail = "，".join([how] * (how != key) + more) or aim
            # A problem's second turn-round ranks below the experiences (资料 has the better words).
            # A bare turn-round (提高价格) ranks below the material's own measures.
            if nth:
                weight = 0.5
            elif turned_round:
                weight = problem.weight + 1 if how else 1.2
            else:  # an experience only loosely tied to the problem
                weight = 0.8
            out.append(Point(head=key, detail=detail, order=len(out), weight=weight, answers_problem=turned_round))
    for exp, _n, advice in experiences:
        if exp in taken or any(overlap(exp, p.head + p.detail) >= 0.5 for p in out):
            continue
        taken.add(exp)
        out.append(Point(head=exp, detail="，".join(siblings(exp)), order=len(out),
                         weight=cue_score(exp, PRACTICE_CUES) * 0.5 + (1.5 if advice else 0.0)))
    return out


_MEASURE_HEADING = re.compile(r"^#{1,6}\s*.*(?:对策|措施|做法|怎么做|建议|路径|举措)")


def knowledge_measures(prompt: Prompt) -> list[Point]:
    """The measures the knowledge passages list (the 关键词：说明 lines under a 对策 /
    做法 heading), for a material too thin to carry enough of its own."""
    points: list[Point] = []
    for src in prompt.sources:
        under = False
        for line in src.text.splitlines():
            if line.lstrip().startswith("#"):
                under = bool(_MEASURE_HEADING.match(line.strip()))
                continue
            text = strip_markdown(line).strip()
            head, colon, detail = text.partition("：")
            if under and colon and 2 <= len(head) <= 12:
                points.append(Point(head=head, detail=trim_to_limit(detail, 40).rstrip("，、；"),
                                    order=1000 + len(points), weight=0.1))
    return points


def all_measures(prompt: Prompt, spec: TaskSpec, budget: int) -> list[Point]:
    """The material's measures, topped up from the knowledge base when they fill less
    than half the budget (a two-line 给定资料)."""
    found = measures(prompt, spec)
    if sum(char_count(p.text()) for p in found) < budget // 2:
        # Only measures that share words with the material or the 题目 (a passage on
        # rural revitalisation also matches 农村 but is not about waste sorting).
        context = prompt.material + (prompt.task or prompt.question)
        extra = [(overlap(p.text(), context), p) for p in knowledge_measures(prompt)]
        found += [p for score, p in sorted(extra, key=lambda e: -e[0]) if score >= 0.2
                  and not any(overlap(p.head, q.head) >= 0.6 for q in found)]
    return found


def countermeasure_answer(prompt: Prompt, spec: TaskSpec) -> str:
    limit = spec.limit or 400
    low, high = band(limit, spec.low)
    subject = _subject(spec)
    intro = f"{subject}应针对资料反映的问题，借鉴资料中的经验做法，采取以下对策："
    budget = int((low + high) / 2) - char_count(intro)
    found = all_measures(prompt, spec, budget)
    most = spec.points[1] if spec.points else 10
    chosen = fit_points(found, budget, per_point_cost=4, most=most)
    if sum(char_count(p.text(full)) + 4 for p, full in chosen) < low - char_count(intro):
        # Short points leave the sheet half empty: more of them (the score's count is a
        # guide, the band is what the examiner sees).
        chosen = fit_points(found, budget, per_point_cost=4, most=most + 3)
    text = "\n".join([intro, *numbered([p.text(full) for p, full in chosen])])
    return trim_to_limit(text, limit)


_AUDIENCE = (("市民", "广大市民朋友们："), ("居民", "各位居民朋友："), ("村民", "各位村民朋友："),
             ("学生", "同学们："), ("游客", "各位游客朋友："), ("商户", "各位商户朋友："),
             ("家长", "各位家长朋友："), ("群众", "广大群众朋友们："))
_MEETING = re.compile(r"在([^，,。]{2,24}?会)(?:议)?上")
_PURPOSE = re.compile(r"(?:倡导|号召|呼吁|动员|推动|围绕|邀请|就)([^，,。（(]{2,30})")
# 向在外的A县青年写一份倡议书 / 给全县经营主体写一封公开信: the 题目 names whom it is to.
_ADDRESSEE = re.compile(r"(?:向|给)([^，,。；向给]{2,16}?)(?:写|发出|发布|拟写|起草)")
# 邀请他们回乡创业: a letter that invites opens on how home has changed, not on its troubles.
_INVITATION = re.compile(r"邀请|欢迎|吸引|回乡|返乡|回到家乡")


def _audience(task: str, material: str, signer: str) -> str:
    named = _ADDRESSEE.search(task)
    for word, salutation in _AUDIENCE:
        if word in task:
            return salutation
    if named:
        return f"{re.sub(r'^(?:全体|广大|辖区)', '', named.group(1))}朋友们："
    for word, salutation in _AUDIENCE:
        if word in material[:KEYWORD_SPAN]:
            return salutation
    for word, salutation in (("街道", "各位居民朋友："), ("社区", "各位居民朋友："), ("居委会", "各位居民朋友："),
                             ("村", "各位村民朋友："), ("学校", "同学们：")):
        if word in signer:
            return salutation
    return "各位朋友："


_GENRE_WORDS = re.compile(r"(?:倡议书|讲话稿|公开信|建议书|调研报告|简报|新闻稿|情况说明|工作方案|宣传稿|编者按|"
                         r"发言稿|讲话|座谈会|会议|大会|会上|文章|名义|工作人员)")


def _topic(task: str, material: str) -> str:
    """What a document or essay is about: the 倡导… clause of the 题目, else its
    longest focus phrase that is not a genre word, else the material's top term."""
    purpose = _PURPOSE.search(task)
    if purpose:
        topic = re.sub(r"^(?:全体|广大)?(?:市民|居民|村民|群众|学生|大家|他们|你们)", "", purpose.group(1)).strip()
        # 就X的开展情况发布一篇新闻稿 → X
        topic = re.sub(r"(?:的)?(?:开展情况|有关情况|情况)?(?:撰写|写|发布|编发|拟写|起草|编写|拟|制定|形成)[^，。]*$",
                       "", topic).strip()
        if len(topic) >= 2:
            return topic
    meeting = _MEETING.search(task)
    if meeting:
        topic = re.sub(r"(?:座谈会|工作会|推进会|大会|会议|会)$", "", meeting.group(1))
        if len(topic) >= 2:
            return topic
    # 对全县农村寄递物流情况进行了调研 / 组织了一次银发经济专题调研: what was surveyed.
    surveyed = re.search(r"(?:对|就)([^，,。]{2,20}?)(?:的?情况)?(?:进行|开展)了?(?:专题)?调研|"
                         r"(?:开展|组织)了?(?:一次)?([^，,。对就]{2,12}?)(?:专题)?调研", task)
    if surveyed:
        return surveyed.group(1) or surveyed.group(2)
    # 拟在今年夏季开展“夜经济”促消费活动 → 夜经济促消费活动
    event = re.search(r"(?:开展|举办|推行|实施|组织)([^，,。]{2,18}?(?:活动|行动|改革|工作))", task)
    if event:
        return re.sub(r"[“”\"]", "", event.group(1))
    words = [_GENRE_WORDS.sub("", w) for w in task_focus(task).split()]
    words = [w for w in words if 2 <= len(w) <= 14]
    return max(words, key=len) if words else (material_keywords(material, 1) or ["相关工作"])[0]


_SPEECHES = ("讲话稿", "发言稿", "致辞", "演讲稿")
_LETTERS = ("倡议书", "公开信", "建议书")
_ORDINALS = ("一、", "二、", "三、", "四、", "五、", "六、", "七、", "八、")
_SPOKEN = ("第一，", "第二，", "第三，", "第四，", "第五，", "第六，", "第七，", "第八，")


def _title(genre: str, task: str, topic: str) -> str:
    meeting = _MEETING.search(task)
    fact = re.split(r"[。！？]", task, maxsplit=1)[0]
    if genre in ("新闻稿", "简报") and "请" not in fact and 6 <= char_count(fact) <= 32:
        return re.sub(r"[“”\"]", "", fact).replace("了", "", 1)  # the news itself is the title
    if genre in _SPEECHES:
        return f"在{meeting.group(1)}上的讲话" if meeting else f"关于{topic}的讲话"
    if genre == "情况说明" and (fact := occasion(task)):
        # 关于X街道在…考核中排名靠后的情况说明: the matter, not who reported it.
        fact = re.sub(r"^(?:区里|市里|县里|上级|有关部门)?(?:通报|反映|通知)了?", "", fact.split("，")[0])
        return f"关于{fact}的情况说明"
    return f"{topic}{genre}" if genre in _LETTERS and len(topic) <= 14 else f"关于{topic}的{genre}"


def document_answer(prompt: Prompt, spec: TaskSpec) -> str:
    task = prompt.task or prompt.question
    genre = spec.genre.name if spec.genre else "倡议书"
    parts = spec.required_parts or ("标题", "正文")
    limit = spec.limit or 600
    low, high = band(limit, spec.low)
    signer = spec.signer or "××"
    topic = _topic(task, prompt.material)
    sents = material_sentences(prompt.material)
    problems = [p for p in sorted(extract_points(sents, "problem"), key=lambda p: (-p.weight, p.order))
                if not _PRONOUN.search(p.head)]
    speech = genre in _SPEECHES
    meeting = _MEETING.search(task)
    head: list[str] = [_title(genre, task, topic)] if "标题" in parts else []
    if "称谓" in parts:
        head.append("各位代表，同志们：" if speech else _audience(task, prompt.material, signer))
    tail: list[str] = []
    if "号召" in parts or genre in _LETTERS or speech:
        tail.append(f"让我们行动起来，从我做起、从现在做起，携手把{topic}落到实处！")
    if "结束语" in parts or speech:
        tail.append("谢谢大家！")
    if "落款" in parts:
        tail += [signer, "×年×月×日"]
    if speech:
        opening = (f"今天召开{meeting.group(1)}，" if meeting else "今天请大家来，") + f"就是共商{topic}。"
        lead, ordinals = "对此，我讲几点意见。", _SPOKEN
    elif genre == "倡议书":
        opening, lead, ordinals = "", "为此，我们倡议：", _ORDINALS
    elif genre in _LETTERS:
        opening, lead, ordinals = "", "为此，我们提出以下几点：", _ORDINALS
    else:
        return _sectioned(prompt, spec, genre, head, tail, topic, signer)
    situation, opener = problems[:4], "当前，"
    if _INVITATION.search(task):
        situation = sorted(extract_points(sents, "effect"), key=lambda p: (-p.weight, p.order))[:3]
        opener = "近年来，家乡发生了可喜的变化："
    while True:
        current = (opener + "；".join(p.text()[:36].rstrip("，、；：") for p in situation) + "。") if situation else ""
        frame = "\n".join([*head, opening + current + lead, *tail])
        if not situation or char_count(frame) <= (low + high) * 2 // 5:
            break
        situation = situation[:-1]
    budget = (low + high) // 2 - char_count(frame)
    points = all_measures(prompt, spec, budget)
    if sum(char_count(p.text()) for p in points) < budget:  # thin: the material's practices too
        points += [p for p in extract_points(sents, "practice", least=0.3)
                   if not any(overlap(p.text(), q.text()) >= 0.5 for q in points)]
    chosen = fit_points(points, budget, per_point_cost=4, most=len(ordinals))
    body = [f"{ordinals[i]}{p.text(full).rstrip('。；;，,')}。" for i, (p, full) in enumerate(chosen)]
    text = "\n".join([*head, opening + current + lead, *body, *tail])
    return text if char_count(text) <= limit else trim_to_limit(text, limit)


# Report-like genres: sections of the material's points (kind "measure": the
# measures of the material; the other kinds: points of extract_points).
_SECTIONS: dict[str, tuple[tuple[str, str], ...]] = {
    # A report's 基本情况 is how things stand (成效、变化); what others did is for its 对策建议.
    "调研报告": (("一、基本情况", "overview"), ("二、存在的问题", "problem"), ("三、对策建议", "measure")),
    "情况说明": (("一、基本情况", "story"), ("二、原因分析", "cause"), ("三、下一步措施", "measure")),
    # A plan's tasks are what the material proposes; its safeguards answer the troubles
    # seen before (停车、卫生、噪声 → 保障措施); its aim is the 题目's.
    "工作方案": (("一、工作目标", "aim"), ("二、主要任务", "proposal"), ("三、实施步骤", "steps"),
                 ("四、保障措施", "safeguard")),
    "简报": (("", "story"),),
    "新闻稿": (("", "story"),),
}
_OPENINGS = {"调研报告": "为了解{topic}情况，{signer}开展了专题调研，现将有关情况报告如下。",
             "情况说明": "{cause}经认真核查，现将有关情况说明如下。", "工作方案": "为做好{topic}工作，结合实际，制定本方案。"}
_TIME_LEAD = re.compile(r"^(?:近日|日前|近期|最近|前不久|今年以来)[，,]?")


def occasion(task: str) -> str:
    """What a 情况说明 answers, as the 题目's first sentence tells it (区里通报X街道
    在…考核中排名靠后; 近日，网上流传…的视频), quotes out; "" when the 题目 opens on
    its request (请…, 假如你是…)."""
    fact = re.split(r"[。！？]", task, maxsplit=1)[0]
    if re.search(r"请|假如|假设|如果你", fact) or not 6 <= char_count(fact) <= 40:
        return ""
    return _TIME_LEAD.sub("", re.sub(r"[“”\"]", "", fact)).strip()


# How long a plan runs, the most definite reading first: 7月至9月, then 一学期, then 三个月.
_SPANS = (re.compile(r"\d{1,2}月(?:\d{1,2}日)?[至到～~\-—]\d{1,2}月(?:\d{1,2}日)?"),
          re.compile(r"[一两三四五六]个?(?:学期|季度)"), re.compile(r"[两三四五六七八九十]个月"))


def _fallback(label: str, task: str, topic: str) -> str:
    """A section the material has no points for: its aim in the 题目's words
    (为提振消费 → 通过开展…，提振消费)."""
    purpose = re.search(r"(?:^|[，,。])为(?:了)?([^，,。]{2,16})[，,]", task)
    return (f"通过开展{topic}，{purpose.group(1)}。" if purpose else f"确保{topic}取得实效。")


def _sectioned(prompt: Prompt, spec: TaskSpec, genre: str, head: list[str], tail: list[str],
               topic: str, signer: str) -> str:
    """A report-like document: an opening, then labelled sections of the material's
    points, each with its share of the budget."""
    limit = spec.limit or 600
    low, high = band(limit, spec.low)
    sents = material_sentences(prompt.material)
    sections = _SECTIONS.get(genre, (("一、主要做法", "practice"), ("二、存在问题", "problem"),
                                     ("三、下一步打算", "measure")))
    used: set[int] = set()
    if genre in _OPENINGS:
        fact = occasion(prompt.task or prompt.question)
        opening = _OPENINGS[genre].format(topic=topic, signer=signer if signer != "××" else "我们",
                                          cause=f"近期，{fact}。" if fact else "")
    else:  # 简报, 新闻稿: the lead is the material's first sentence, the story the rest
        opening = trim_to_limit(sents[0], 90) if sents else topic
        used.add(0)
    frame = "\n".join([*head, opening, *(label for label, _ in sections if label), *tail])
    room = (low + high) // 2 - char_count(frame)
    shown: list[str] = []
    task = prompt.task or prompt.question
    plan: list[tuple[str, list[Point], list[tuple[Point, bool]]]] = []
    for n, (label, kind) in enumerate(sections):
        share = room // (len(sections) - n)   # what a thin section leaves goes to the next
        if kind in ("measure", "proposal", "safeguard"):
            points = [p for p in all_measures(prompt, spec, share)
                      if kind == "measure" or p.answers_problem == (kind == "safeguard")]
        elif kind == "aim":
            points = []
        elif kind == "steps":  # the format's three phases, over the time the material gives
            span = next((m for pattern in _SPANS if (m := pattern.search(task + prompt.material))), None)
            during = f"（{span.group(0)}）" if span else ""
            points = [Point(head=head, detail=detail, order=i, weight=9.0) for i, (head, detail) in enumerate((
                ("部署阶段", "制定方案，明确各部门分工和责任"),
                (f"实施阶段{during}", "按主要任务逐项推进，定期调度"),
                ("总结阶段", "总结评估成效，固化好的做法，形成长效机制")))]
        elif kind == "overview":  # how things stand: the figures and changes, no trouble, no remarks
            points = [Point(head=told, detail="", order=n,
                            weight=float(bool(re.search(r"\d|[一二三四五六七八九十几百千万亿]成", sent)))
                            + cue_score(sent, EFFECT_CUES))
                      for n, sent in enumerate(sents) if n not in used and cue_score(sent, PROBLEM_CUES) < 1
                      and (told := "，".join(c for c in clauses(sent) if not re.search(r"[我你]", c)))]
        elif kind == "story":  # the material retold: its sentences in their order, remarks out
            points = [Point(head=told, detail="", order=n,
                            weight=cue_score(sent, PRACTICE_CUES) + cue_score(sent, EFFECT_CUES))
                      for n, sent in enumerate(sents) if n not in used
                      and (told := "，".join(c for c in clauses(sent) if not re.search(r"[我你]", c)))]
        else:
            points = extract_points(sents, kind, exclude=used, least=0.3)
            if not points and kind == "cause":  # no 因为/由于: the problems are the reasons
                points = extract_points(sents, "problem", exclude=used, least=0.3)
        # What one section said, the next does not repeat (下一步措施 is not 基本情况 again).
        points = [p for p in points if not any(overlap(p.text(), t) >= 0.5 for t in shown)]
        chosen = fit_points(points, share, per_point_cost=4, most=6 if label else 8)
        if kind not in ("measure", "proposal", "safeguard"):  # a measure's order is not a sentence's
            used |= {p.order for p, _ in chosen}
        shown += [p.text(full) for p, full in chosen]
        room -= sum(char_count(p.text(full)) + 4 for p, full in chosen)
        plan.append((label, points, chosen))
    # Room left (a thin section): the sections take more of their own points, in turn.
    for label, points, chosen in plan:
        for p in sorted(points, key=lambda p: (-p.weight, p.order)):
            cost = char_count(p.text()) + 4
            if (cost <= room and len(chosen) < (6 if label else 8) and all(p is not q for q, _ in chosen)
                    and not any(overlap(p.text(), t) >= 0.5 for t in shown)):
                chosen.append((p, True))
                shown.append(p.text())
                room -= cost
        chosen.sort(key=lambda c: c[0].order)
    body: list[str] = []
    for label, _, chosen in plan:
        if label:
            body.append(label)
            body += numbered([p.text(full) for p, full in chosen]) or [_fallback(label, task, topic)]
        elif chosen:  # a news paragraph: sentences, not points
            body.append("；".join(p.text(full).replace("：", "，").rstrip("。；;，,") for p, full in chosen) + "。")
    text = "\n".join([*head, opening, *body, *tail])
    return text if char_count(text) <= limit else trim_to_limit(text, limit)


def analyze_answer(prompt: Prompt, spec: TaskSpec) -> str:
    task = prompt.task or prompt.question
    sents = material_sentences(prompt.material)
    limit = spec.limit or 350
    quoted = re.search(r"[“\"]([^”\"]{2,40})[”\"]", task)
    subject = quoted.group(1) if quoted else task_focus(task)
    problems = [p for p in sorted(extract_points(sents, "problem"), key=lambda p: (-p.weight, p.order))
                if not _PRONOUN.search(p.head)][:2]
    practices = [p for p in sorted(extract_points(sents, "practice"), key=lambda p: (-p.weight, p.order))
                 if not any(overlap(p.head, q.head) >= 0.6 for q in problems)][:3]
    kind = spec.subtype or "解释"
    lines = [f"（作答提纲·{kind}型）", f"观点：{('“' + subject + '”') if quoted else subject}，结合资料理解如下。"]
    if problems:
        lines.append("分析一（问题与原因）：" + "；".join(p.head for p in problems) + "。")
    for n, p in enumerate(practices, 2):
        lines.append(f"分析{'一二三四五'[n - 1]}（资料中的做法）：{p.head}。")
    lines.append("落脚：由此可见，应当坚持问题导向，把资料中的有效做法形成长效机制。")
    return trim_to_limit("\n".join(lines), limit)


def essay_answer(prompt: Prompt, spec: TaskSpec) -> str:
    task = prompt.task or prompt.question
    sents = material_sentences(prompt.material)
    quoted = re.search(r"围绕[“\"]([^”\"]{2,30})[”\"]", task) or re.search(r"[“\"]([^”\"]{2,30})[”\"]", task)
    theme = quoted.group(1) if quoted else _topic(task, prompt.material)
    practices = sorted(extract_points(sents, "practice"), key=lambda p: (-p.weight, p.order))[:3]
    problems = sorted(extract_points(sents, "problem"), key=lambda p: (-p.weight, p.order))[:1]
    title = f"以务实之举{theme}" if theme[:1] in "办做抓推建让守促走答写用当干" else f"论{theme}"
    lines = ["（作答提纲：离线模式只给出结构和资料事例，正文需考生展开到1000～1200字）",
             f"标题：{title}", f"总论点：{theme}，关键在于把资料中的好做法落到实处。"]
    for n, p in enumerate(practices):
        lines.append(f"分论点{'一二三'[n]}：{p.head}。" + (f"资料事例：{p.detail}。" if p.detail else ""))
    if problems:
        lines.append(f"反面论证：{problems[0].head}。")
    lines.append(f"结尾：回扣总论点，{theme}，久久为功、善作善成。")
    return "\n".join(lines)


_GREETING = re.compile(r"^\s*(?:你好|您好|嗨|哈喽|hello|hi|hey|在吗|在么|早上好|晚上好|下午好|谢谢|多谢|感谢)"
                       r"[呀啊哇呢！!。.，,~～\s]*$", re.I)


def greeting_answer(book: PromptBook) -> str:
    modes = "、".join(label for key, label in MODES.items() if key != "chat")
    return ("你好！我是申论助手，可以陪你练申论：\n"
            f"1. 按题型作答：{modes}，把给定资料和题目发给我，我按答题纸的要求作答。\n"
            "2. 批改答案：发来你的答案，我对照得分点给出模拟评分和修改建议。\n"
            "3. 答疑：备考方法、题型思路、常用表述都可以问。\n"
            "（当前为离线模式：未配置大模型，作答由程序从资料中摘取，答疑来自知识库。）")


def _excerpt(text: str, limit: int) -> str:
    """A knowledge passage as plain text, cut at the last sentence end within `limit`."""
    plain = " ".join(strip_markdown("\n".join(line for line in text.splitlines()
                                               if not line.lstrip().startswith("#"))).split())
    if char_count(plain) <= limit:
        return plain
    cut = trim_to_limit(plain, limit)
    return cut if cut.endswith(tuple("。！？；")) else cut.rstrip("，,、：:") + "……"


def skeleton(spec: TaskSpec, task: str) -> list[str]:
    """The format of the 文种 a question names, filled with its role and topic."""
    genre = spec.genre
    if genre is None:
        return []
    topic = _topic(task, "")
    lines = [f"【{genre.name}格式骨架】"]
    for part in spec.required_parts:
        if part == "标题":
            lines.append("标题：" + _title(genre.name, task, topic))
        elif part == "称谓":
            lines.append("称谓：" + ("各位代表，同志们：" if genre.name in _SPEECHES else _audience(task, "", spec.signer)))
        elif part == "落款":
            lines.append(f"落款：{spec.signer or '发文单位'}　×年×月×日")
    lines.append(f"正文写法：{genre.notes}。")
    return lines + [""]


def method_answer(prompt: Prompt, book: PromptBook) -> str:
    """No material: the mode's method and the knowledge passages, plain; a 文种's
    skeleton first when the question names one."""
    mode = prompt.mode
    if mode == "chat" and _GREETING.match(prompt.question):
        return greeting_answer(book)
    lines: list[str] = skeleton(prompt.spec, prompt.question) if mode == "document" and prompt.spec else []
    if prompt.sources:
        lines.append("根据知识库的资料：")
        for n, src in enumerate(prompt.sources, 1):
            lines.append(f"{n}. 《{src.title}》：{_excerpt(src.text, METHOD_EXCERPT_CHARS)}")
        if mode != "chat":
            lines += ["", f"【{MODES[mode]}·答题思路】"]
            lines += [f"{n}. {step}" for n, step in enumerate(book.guide(mode), 1)]
    else:
        lines.append("知识库中没有找到与该问题直接相关的资料。" + (
            "可以换个说法，或带上题型（如“概括题怎么找点”）再问。" if mode == "chat" else ""))
        lines += ["", f"【{MODES[mode]}·答题思路】"]
        lines += [f"{n}. {step}" for n, step in enumerate(book.guide(mode), 1)]
    lines += ["", OFFLINE_NOTICE["method"]]
    return "\n".join(lines)


def offline_answer(prompt: Prompt, book: PromptBook | None = None) -> str:
    """The offline answer for a prompt (deterministic)."""
    book = book or default_book()
    spec = prompt.spec or read_task(prompt.mode, prompt.task, prompt.word_limit, book)
    if not prompt.material.strip() or not prompt.exam:
        return method_answer(prompt, book)
    # 审题 first: 根据给定资料3 means the points come from section 3 only.
    prompt = replace(prompt, material=scoped_material(prompt.material, spec.sections))
    answer = {"summarize": summarize_answer, "countermeasure": countermeasure_answer,
              "document": document_answer, "analyze": analyze_answer, "essay": essay_answer}[prompt.mode]
    return answer(prompt, spec)
