"""Regenerate neosft/sample/neo_sft_sample.json, the small corpus shipped with neosft.

Shaped like m-a-p/neo_sft_phase2: mostly Chinese, some English, some code, 1 to 10 rounds, a few
system prompts and a few bad records of every skip reason. Deterministic: same output every run.

    python scripts/make_sample_corpus.py
"""

import json
import random
from pathlib import Path

PAIRS = [
    (
        "什么是机器学习？",
        "机器学习是人工智能的一个分支，它让计算机通过数据自动学习规律，而不是依靠人工编写的规则。常见的方法包括监督学习、无监督学习和强化学习。",
    ),
    ("请用一句话解释什么是监督学习。", "监督学习就是用带有标签的样本训练模型，让模型学会从输入预测正确的输出。"),
    (
        "北京有哪些著名的景点？",
        "北京的著名景点包括故宫、天安门广场、长城（八达岭和慕田峪）、颐和园、天坛和南锣鼓巷等。",
    ),
    (
        "如何提高睡眠质量？",
        "可以尝试以下方法：\n1. 每天固定时间睡觉和起床；\n2. 睡前一小时远离手机屏幕；\n3. 避免下午喝咖啡；\n4. 保持卧室安静、黑暗和凉爽；\n5. 白天适量运动。",
    ),
    ("把“今天天气很好”翻译成英文。", "The weather is very nice today."),
    ("写一首关于秋天的五言绝句。", "秋风拂落叶，\n雁阵过南楼。\n明月照孤影，\n清霜满客愁。"),
    (
        "解释一下 Python 中的列表推导式。",
        "列表推导式是一种简洁地创建列表的语法，例如：\n```python\nsquares = [x * x for x in range(10) if x % 2 == 0]\n```\n它等价于一个带条件判断的 for 循环，但更短、更易读。",
    ),
    (
        "用 Python 写一个函数，判断一个数是否为质数。",
        "```python\ndef is_prime(n: int) -> bool:\n    if n < 2:\n        return False\n    i = 2\n    while i * i <= n:\n        if n % i == 0:\n            return False\n        i += 1\n    return True\n```\n这个函数只需检查到 √n 为止，时间复杂度是 O(√n)。",
    ),
    (
        "什么是梯度下降？",
        "梯度下降是一种优化算法：沿着损失函数梯度的反方向，一步步更新参数，使损失逐渐变小。学习率决定每一步走多远。",
    ),
    (
        "学习率太大会怎样？",
        "学习率太大时，参数更新会越过最低点，损失可能来回震荡甚至发散；太小则收敛很慢。通常配合预热（warmup）和余弦退火等调度策略使用。",
    ),
    ("中国的四大发明是什么？", "中国古代的四大发明是造纸术、印刷术、火药和指南针。"),
    (
        "给我推荐三本适合入门的编程书。",
        "1.《Python编程：从入门到实践》\n2.《计算机科学导论》\n3.《代码大全》\n建议先从第一本开始，边读边动手写代码。",
    ),
    ("What is the capital of Australia?", "The capital of Australia is Canberra, not Sydney as many people assume."),
    (
        "Explain recursion in one paragraph.",
        "Recursion is when a function solves a problem by calling itself on a smaller version of the same problem, until it reaches a base case that can be answered directly. Each call waits for the smaller call to return, then combines the result.",
    ),
    (
        "Write a SQL query that counts orders per customer.",
        "```sql\nSELECT customer_id, COUNT(*) AS orders\nFROM orders\nGROUP BY customer_id\nORDER BY orders DESC;\n```",
    ),
    (
        "How do I reverse a string in JavaScript?",
        'Split it into characters, reverse the array and join it back:\n```js\nconst reversed = [...text].reverse().join("");\n```\nUsing the spread operator keeps emoji such as 😀 intact.',
    ),
    (
        "什么是 Kubernetes？",
        "Kubernetes 是一个开源的容器编排平台，用来自动部署、扩缩容和管理容器化应用。它的核心对象包括 Pod、Deployment、Service 和 Job。",
    ),
    (
        "Pod 和容器有什么区别？",
        "容器是运行进程的隔离环境；Pod 是 Kubernetes 调度的最小单位，一个 Pod 可以包含一个或多个共享网络和存储的容器。",
    ),
    ("解释“欲速则不达”的意思。", "这句成语出自《论语》，意思是过于追求速度，反而达不到目的。做事要循序渐进。"),
    (
        "帮我写一封请假邮件。",
        "主题：请假申请\n\n王经理您好：\n\n因家中有事，我想于本周五（11月28日）请假一天，工作已安排同事代为跟进。望批准。\n\n此致\n敬礼\n\n李明",
    ),
    ("1 加到 100 等于多少？", "1 + 2 + … + 100 = 100 × 101 ÷ 2 = 5050。"),
    (
        "为什么天空是蓝色的？",
        "因为瑞利散射：阳光穿过大气时，波长较短的蓝光比红光更容易被空气分子散射，所以我们从各个方向看到的天空都是蓝色的。",
    ),
    (
        "What does HTTP status 404 mean?",
        "404 Not Found means the server could not find the requested resource. The server itself is reachable; the path is wrong or the resource was removed.",
    ),
    ("用一句话总结《西游记》。", "唐僧师徒四人历经九九八十一难，前往西天取得真经的故事。"),
    (
        "如何在 Linux 中查看磁盘使用情况？",
        "使用 `df -h` 查看各文件系统的使用情况，使用 `du -sh 目录名` 查看某个目录占用的空间。",
    ),
    (
        "请列出三种常见的排序算法及其平均时间复杂度。",
        "- 快速排序：O(n log n)\n- 归并排序：O(n log n)\n- 冒泡排序：O(n²)",
    ),
    ("Translate 'knowledge is power' into Chinese.", "知识就是力量。"),
    (
        "深度学习为什么需要 GPU？",
        "深度学习的核心计算是大规模矩阵乘法，GPU 拥有成千上万个并行计算单元，处理这类运算比 CPU 快几十倍以上。",
    ),
    (
        "什么是微调（fine-tuning）？",
        "微调是在预训练模型的基础上，用特定任务的数据继续训练，使模型适应新的任务或风格。全参数微调会更新模型的所有权重。",
    ),
    ("继续", "好的，我们接着上面的话题继续。还有什么具体的问题吗？"),
]
SYSTEMS = ["你是一个乐于助人的助手。", "You are a concise assistant that answers in the user's language."]


def record(rng: random.Random, i: int) -> dict:
    rounds = min(10, 1 + int(rng.expovariate(0.6)))
    turns = [{"from": "system", "value": rng.choice(SYSTEMS)}] if rng.random() < 0.08 else []
    for question, answer in rng.sample(PAIRS, rounds):
        turns.append({"from": rng.choice(["human", "human", "user"]), "value": question})
        turns.append({"from": rng.choice(["gpt", "gpt", "assistant"]), "value": answer})
    if rng.random() < 0.05:
        turns.append({"from": "human", "value": "谢谢！"})  # unanswered: dropped by normalising
    return {"id": f"sample-{i:04d}", "conversations": turns}


BAD = [
    ["not an object"],
    {"id": "bad-no-conversations"},
    {"conversations": []},
    {"conversations": [{"from": "human", "value": 42}, {"from": "gpt", "value": "数字不是字符串"}]},
    {"conversations": [{"from": "robot", "value": "你好"}, {"from": "gpt", "value": "你好！"}]},
    {"conversations": [{"from": "system", "value": "只有系统提示"}]},
    {"conversations": [{"from": "human", "value": "没有人回答的问题"}]},
    {"conversations": [{"from": "gpt", "value": "先回答"}, {"from": "human", "value": "后提问"}]},
    {
        "conversations": [
            {"from": "human", "value": "你好"},
            {"from": "system", "value": "系统提示放错了位置"},
            {"from": "gpt", "value": "你好"},
        ]
    },
    {"conversations": [{"from": "human", "value": "   "}, {"from": "gpt", "value": "空白的问题"}]},
    {"conversations": [{"from": "human", "value": "空的回答"}, {"from": "gpt", "value": ""}]},
]


def main() -> None:
    rng = random.Random(20261126)
    records = [record(rng, i) for i in range(300)]
    for j, bad in enumerate(BAD):
        records.insert(17 + 23 * j, bad)
    out = Path(__file__).resolve().parent.parent / "neosft" / "sample" / "neo_sft_sample.json"
    out.write_text(json.dumps(records, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"{len(records)} records -> {out}")


if __name__ == "__main__":
    main()
