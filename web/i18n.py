"""English and Simplified Chinese UI strings. The browser's language picks one by default."""

from __future__ import annotations

from collections.abc import Mapping

LANGUAGES = ("en", "zh-CN")

MESSAGES: Mapping[str, Mapping[str, str]] = {
    "en": {
        "title": "vpsmon",
        "login.heading": "Sign in",
        "login.username": "Username",
        "login.password": "Password",
        "login.submit": "Sign in",
        "login.failed": "Wrong username or password.",
        "login.limited": "Too many failed attempts. Try again in a few minutes.",
        "login.expired": "The form expired. Please try again.",
        "nav.servers": "Servers",
        "nav.logout": "Sign out",
        "overview.heading": "Servers",
        "overview.search": "Search servers",
        "overview.empty": "No servers yet.",
        "overview.online": "online",
        "overview.offline": "offline",
        "overview.waiting": "waiting for first scrape",
        "overview.summary": "{online} of {total} online",
        "col.name": "Name",
        "col.status": "Status",
        "col.cpu": "CPU",
        "col.memory": "Memory",
        "col.disk": "Disk",
        "col.load": "Load",
        "col.net": "Network ↓/↑",
        "col.uptime": "Uptime",
        "col.os": "OS",
        "col.last_seen": "Last seen",
        "live.connected": "live",
        "live.disconnected": "reconnecting…",
        "unit.days": "d",
        "unit.hours": "h",
        "unit.minutes": "m",
        "unit.ago": "{value} ago",
        "view.cards": "Cards",
        "view.table": "Table",
    },
    "zh-CN": {
        "title": "vpsmon",
        "login.heading": "登录",
        "login.username": "用户名",
        "login.password": "密码",
        "login.submit": "登录",
        "login.failed": "用户名或密码错误。",
        "login.limited": "失败次数过多，请几分钟后再试。",
        "login.expired": "表单已过期，请重试。",
        "nav.servers": "服务器",
        "nav.logout": "退出登录",
        "overview.heading": "服务器",
        "overview.search": "搜索服务器",
        "overview.empty": "还没有服务器。",
        "overview.online": "在线",
        "overview.offline": "离线",
        "overview.waiting": "等待首次采集",
        "overview.summary": "{online} / {total} 在线",
        "col.name": "名称",
        "col.status": "状态",
        "col.cpu": "CPU",
        "col.memory": "内存",
        "col.disk": "磁盘",
        "col.load": "负载",
        "col.net": "网络 ↓/↑",
        "col.uptime": "运行时间",
        "col.os": "系统",
        "col.last_seen": "最后在线",
        "live.connected": "实时",
        "live.disconnected": "正在重连…",
        "unit.days": "天",
        "unit.hours": "小时",
        "unit.minutes": "分钟",
        "unit.ago": "{value}前",
        "view.cards": "卡片",
        "view.table": "表格",
    },
}


def pick_language(cookie: str | None, accept_language: str | None) -> str:
    """The `lang` cookie if valid, else the first supported language the browser asks for."""
    if cookie in LANGUAGES:
        return cookie
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith("zh"):
            return "zh-CN"
        if tag.startswith("en"):
            return "en"
    return "en"
