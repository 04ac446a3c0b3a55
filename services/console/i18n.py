"""Every label and message of the console in English and Simplified Chinese.

A test checks both languages have the same keys, every error code of contracts.http has a
sentence, and every key the templates and code use exists.
"""

from __future__ import annotations

from typing import Any

LANGUAGES = ("en", "zh-CN")
DEFAULT = "en"

FEATURES = {
    "basic": ("Basic Edition", "基础版"),
    "cloud_film": ("Cloud film (patient imaging records)", "云胶片（患者影像档案）"),
    "advanced_viewer": ("Advanced viewer (3D, MPR, fusion)", "高级阅片（3D、MPR、融合）"),
    "remote_diagnosis": ("Remote diagnosis", "远程诊断"),
    "remote_consultation": ("Remote consultation", "远程会诊"),
    "remote_ward_rounds": ("Remote ward rounds", "远程查房"),
    "remote_teaching": ("Remote teaching", "远程教学"),
    "data_statistics": ("Data statistics", "数据统计"),
    "image_quality_control": ("Image quality control", "影像质控"),
    "mobile_terminal": ("Mobile terminal", "移动端"),
    "follow_up": ("Follow-up", "随访"),
    "ai_perpetual": ("Mimi AI Assistant, perpetual", "米米 AI 助手（永久授权）"),
}

SKUS = {
    "CI-QTY": ("Cloud inspections, by quantity", "云检查（按数量）",
               "Prepaid inspections valid one year; each is stored for the storage duration you choose. Price = quantity × unit price for that duration.",
               "预付检查量，有效期一年；每次检查按所选存储年限保存。价格 = 数量 × 该存储年限的单价。"),
    "CI-ANNUAL": ("Cloud inspections, annually", "云检查（按年）",
                  "Prepaid inspections valid one year, stored for whole years 1 to 30. Price = quantity × unit price per year × storage years.",
                  "预付检查量，有效期一年，存储 1 至 30 整年。价格 = 数量 × 每年单价 × 存储年数。"),
    "AI-QTY": ("Mimi AI Assistant (large language model AI report), pay-as-you-go", "米米 AI 助手（大模型 AI 报告），按量付费",
               "Prepaid AI reviews, billed per reviewed case, online or by API; valid one year. No arrears: without balance a review is refused.",
               "预付 AI 审阅次数，按审阅病例计费，在线或 API 调用；有效期一年。不允许欠费：余额为零时审阅将被拒绝。"),
    "AI-PERPETUAL": ("Mimi AI Assistant, perpetual (offline)", "米米 AI 助手，永久授权（线下）",
                     "One-time purchase per product set, deployed offline; recorded by sales staff.",
                     "按产品套数一次性购买，线下部署；由销售人员录入。"),
    "SW-BASIC": ("Basic Edition", "基础版",
                 "Mandatory and indivisible: inspection management, report management, image browsing, hospital management, doctor management, cloud film configuration, data management, log audit.",
                 "必选且不可拆分：检查管理、报告管理、影像浏览、医院管理、医生管理、云胶片配置、数据管理、日志审计。"),
    "SW-OPT": ("Optional software feature", "可选软件功能",
               "One optional feature per line, per month; needs an active Basic Edition or the Basic Edition in the same order.",
               "每行一个可选功能，按月计费；需要基础版处于有效期内，或在同一订单中购买基础版。"),
    "SVC-DELIVERY": ("Delivery service", "交付服务",
                     "One-time delivery, local or remote; complete when you accept it, expires if not accepted within one year.",
                     "一次性交付，本地或远程；在您确认验收后完成，一年内未验收则过期。"),
    "SVC-SCHEDULED": ("Customised staffing", "定制驻场服务",
                      "One-time staffing in person-days (1 to 365); complete when you accept it, expires if not accepted within one year.",
                      "一次性驻场服务，按人天计（1 至 365）；在您确认验收后完成，一年内未验收则过期。"),
    "SVC-MAINTENANCE": ("Maintenance (local maintenance, local inspection, remote maintenance)", "运维服务（本地维护、本地巡检、远程维护）",
                        "Monthly subscription for whole years (1 to 10) from payment, ending by itself. Price = monthly price × 12 × years.",
                        "自付款起按整年（1 至 10 年）的月度订阅，到期自动结束。价格 = 月价 × 12 × 年数。"),
}

UNITS = {
    "inspection": ("inspection", "次检查"), "inspection-year": ("inspection-year", "次检查·年"),
    "review": ("review", "次审阅"), "product set": ("product set", "套"), "month": ("month", "月"),
    "feature-month": ("feature-month", "功能·月"), "delivery": ("delivery", "次交付"),
    "person-day": ("person-day", "人天"),
}

ERRORS = {
    "VALIDATION_ERROR": ("Some of the values are not valid. Please check the form.", "部分填写的值无效，请检查表单。"),
    "UNAUTHORIZED": ("Your sign-in is no longer valid. Please sign in again.", "您的登录已失效，请重新登录。"),
    "FORBIDDEN": ("Your role may not do this.", "您的角色无权执行此操作。"),
    "NOT_FOUND": ("This was not found.", "未找到该内容。"),
    "METHOD_NOT_ALLOWED": ("The service does not accept this request here.", "该服务在此处不接受此请求。"),
    "INTERNAL_ERROR": ("Something went wrong in the service; quote the request id to your operator.",
                       "服务内部出错；请将请求编号告知运维人员。"),
    "AGREEMENT_REQUIRED": ("The signed offline cooperation agreement of this organisation has not been recorded yet, so no order can be placed.",
                           "该机构的线下合作协议尚未登记，因此无法下单。"),
    "QUANTITY_BELOW_MINIMUM": ("The quantity is below the minimum of 1,000.", "数量低于最低购买量 1,000。"),
    "QUANTITY_NOT_MULTIPLE": ("The quantity must be a multiple of 1,000 (for example 1,000, 2,000 or 15,000).",
                              "数量必须是 1,000 的整数倍（例如 1,000、2,000 或 15,000）。"),
    "QUANTITY_TOO_LARGE": ("The quantity is above the maximum for one line.", "数量超过单行上限。"),
    "INVALID_STORAGE_YEARS": ("This storage duration cannot be chosen for this package.", "该套餐不支持所选的存储年限。"),
    "INVALID_DURATION": ("The duration is outside the allowed range (software: 1 to 120 months; maintenance: 1 to 10 years).",
                         "时长超出允许范围（软件：1 至 120 个月；运维：1 至 10 年）。"),
    "INVALID_MODE": ("Choose local or remote delivery.", "请选择本地交付或远程交付。"),
    "UNKNOWN_SKU": ("This product is not in the price book.", "价目表中没有该产品。"),
    "UNKNOWN_FEATURE": ("This optional feature does not exist.", "该可选功能不存在。"),
    "BASIC_EDITION_REQUIRED": ("An optional feature needs an active Basic Edition: add the Basic Edition to this order, or renew it first.",
                               "可选功能需要基础版处于有效期内：请在本订单中加入基础版，或先续订基础版。"),
    "OFFLINE_ONLY_PRODUCT": ("This product is not sold online; our sales staff record it for you.", "该产品不在线销售，由销售人员为您录入。"),
    "ORDER_ID_CONFLICT": ("This form has already placed a different order. Reload the page to start a new order.",
                          "此表单已提交过另一笔订单。请刷新页面后重新下单。"),
    "AMOUNT_MISMATCH": ("The amount does not match the order total.", "金额与订单总额不符。"),
    "ORDER_NOT_PAYABLE": ("This order cannot be paid: it is cancelled or already paid.", "该订单无法付款：已取消或已付款。"),
    "ORDER_NOT_CANCELLABLE": ("This order can no longer be cancelled.", "该订单已无法取消。"),
    "PAYMENT_CONFLICT": ("This order was already paid with a different payment reference.", "该订单已使用其他付款凭证完成付款。"),
    "NOT_PARKED": ("This outbox row is not parked any more: it was already re-published or discarded.",
                   "该发件箱记录已不再搁置：已重新发布或已丢弃。"),
    "PAID_AT_IN_FUTURE": ("The payment date is in the future.", "付款日期不能晚于今天。"),
    "INSUFFICIENT_BALANCE": ("There is no AI review balance left.", "AI 审阅余额不足。"),
    "NO_OFFLINE_LICENCE": ("Offline reviews need the perpetual licence.", "线下审阅需要永久授权。"),
    "SERVICE_NOT_ACCEPTABLE": ("This service can no longer be accepted (it expired or needs no acceptance).",
                               "该服务已无法验收（已过期或无需验收）。"),
    "MALFORMED": ("The usage record is malformed.", "用量记录格式错误。"),
    "UNKNOWN_ORG": ("The organisation is unknown (no agreement recorded).", "机构未知（未登记合作协议）。"),
    "UNKNOWN_TYPE": ("The usage type is unknown.", "用量类型未知。"),
    "INVALID_QUANTITY": ("The usage quantity is invalid.", "用量数量无效。"),
    "TIME_IN_FUTURE": ("The usage time is too far in the future.", "用量时间过于超前。"),
    "TOO_MANY_EVENTS": ("Too many usage records in one request.", "单次请求的用量记录过多。"),
    "UNAVAILABLE": ("A service is unavailable right now. Please try again shortly.", "服务暂时不可用，请稍后重试。"),
    "PAYLOAD_TOO_LARGE": ("The request is too large.", "请求内容过大。"),
}

# One entry a key: (English, Simplified Chinese), so neither language can lack a key.
MESSAGES: dict[str, tuple[str, str]] = {
    "app.name": ("AIMIS Billing", "AIMIS 计费"),
    "nav.skip": ("Skip to content", "跳到正文"),
    "nav.label": ("Main", "主导航"),
    "nav.overview": ("Overview", "概览"),
    "nav.renewals": ("Renewal records", "续费记录"),
    "nav.software": ("Software", "软件"),
    "nav.services": ("Services", "服务"),
    "nav.orders": ("Orders", "订单"),
    "nav.buy_resources": ("Buy resources", "购买资源"),
    "nav.buy_software": ("Buy software", "购买软件"),
    "nav.buy_services": ("Buy services", "购买服务"),
    "nav.ops": ("Operations", "运营"),
    "nav.sign_out": ("Sign out", "退出登录"),
    "lang.switch": ("简体中文", "English"),
    "role.admin": ("Administrator", "管理员"),
    "role.finance": ("Finance", "财务"),
    "role.org": ("Organisation", "机构"),
    "org.label": ("Organisation", "机构"),
    "footer.note": ("AIMIS Billing console. Prices in USD. Every page works without JavaScript.", "AIMIS 计费控制台。价格以美元计。所有页面无需 JavaScript 即可使用。"),
    "login.title": ("Sign in", "登录"),
    "login.token": ("Access token", "访问令牌"),
    "login.help": ("Paste the bearer token you were given (in production, single sign-on signs you in).", "粘贴您获得的访问令牌（生产环境中由单点登录完成登录）。"),
    "login.submit": ("Sign in", "登录"),
    "login.bad_token": ("This is not a valid access token.", "这不是有效的访问令牌。"),
    "login.expired_token": ("This token has expired. Ask for a new one.", "该令牌已过期，请申请新的令牌。"),
    "login.bad_role": ("This token's role cannot use the console.", "该令牌的角色无法使用控制台。"),
    "login.refused": ("The services refused this token.", "服务拒绝了该令牌。"),
    "login.session_ended": ("Your session has ended. Please sign in again.", "您的会话已结束，请重新登录。"),
    "login.signed_out": ("You have signed out.", "您已退出登录。"),
    "error.title": ("Something went wrong", "出错了"),
    "error.home": ("Back to the start page", "返回首页"),
    "error.csrf": ("This form expired or did not come from this console. Reload the page and try again.", "该表单已过期或并非来自本控制台。请刷新页面后重试。"),
    "error.not_found": ("This page does not exist.", "该页面不存在。"),
    "error.forbidden": ("Your role may not see this page.", "您的角色无权查看此页面。"),
    "error.operator_only": ("Only administrators and finance staff may use the operations pages.", "只有管理员和财务人员可以使用运营页面。"),
    "error.unavailable": ("The {service} service is unavailable right now. Please try again shortly.", "{service} 服务暂时不可用，请稍后重试。"),
    "error.bad_form": ("The form is incomplete.", "表单填写不完整。"),
    "overview.title": ("Account overview", "账户概览"),
    "overview.lots": ("Lots", "资源包"),
    "overview.no_lots": ("No lots yet.", "暂无资源包。"),
    "overview.usage": ("Daily usage, last {days} days", "近 {days} 天每日用量"),
    "overview.chart_title": ("Daily usage of {resource}", "{resource}每日用量"),
    "overview.chart_desc": ("Last {days} days: {accepted} accepted, {rejected} rejected.", "近 {days} 天：接受 {accepted}，拒绝 {rejected}。"),
    "overview.offline_licence": ("A perpetual offline licence is held: offline reviews are counted, not deducted.", "已持有永久线下授权：线下审阅只计数，不扣减。"),
    "resource.cloud_inspection": ("Cloud inspections", "云检查"),
    "resource.ai_review": ("AI reviews", "AI 审阅"),
    "metric.purchased": ("Purchased", "已购"),
    "metric.available": ("Available", "可用"),
    "metric.used": ("Used", "已用"),
    "metric.arrears": ("Arrears", "欠费"),
    "metric.forfeited": ("Forfeited", "已作废"),
    "lot.id": ("Lot", "资源包"),
    "lot.sku": ("Product", "产品"),
    "lot.quantity": ("Quantity", "数量"),
    "lot.remaining": ("Remaining", "剩余"),
    "lot.storage": ("Storage", "存储"),
    "lot.credited": ("Credited", "入账"),
    "lot.expires": ("Expires", "到期"),
    "lot.status": ("Status", "状态"),
    "lot.years": ("{n} years", "{n} 年"),
    "lot.years.one": ("1 year", "1 年"),
    "lot.days_left": ("{n} days left", "剩余 {n} 天"),
    "lot.days_left.one": ("1 day left", "剩余 1 天"),
    "services.person_days.one": ("1 person-day", "1 人天"),
    "lot.expiring_soon": ("Expires in under 30 days", "将在 30 天内到期"),
    "lot.status.active": ("Active", "有效"),
    "lot.status.depleted": ("Used up", "已用完"),
    "lot.status.expired": ("Expired", "已过期"),
    "usage.accepted": ("Accepted", "接受"),
    "usage.rejected": ("Rejected", "拒绝"),
    "usage.as_table": ("Show the days with usage as a table", "以表格显示有用量的日期"),
    "usage.day": ("Day", "日期"),
    "renewals.title": ("Renewal records", "续费记录"),
    "renewals.help": ("Every package credited and every software licence period, newest first.", "每个已入账的资源包和每个软件授权期，最新的在前。"),
    "renewals.kind": ("Kind", "类型"),
    "renewals.what": ("Item", "项目"),
    "renewals.start": ("From", "起"),
    "renewals.end": ("Until", "止"),
    "renewals.kind.lot": ("Package", "资源包"),
    "renewals.kind.licence": ("Licence period", "授权期"),
    "renewals.none": ("No renewal records yet.", "暂无续费记录。"),
    "renewals.truncated": ("The account's ledger is longer than {n} entries; licence periods recorded after those are not listed here.", "该账户的账本超过 {n} 条；此后登记的授权期未在此列出。"),
    "software.title": ("Software licences", "软件授权"),
    "software.item": ("Edition or feature", "版本或功能"),
    "software.state": ("State", "状态"),
    "software.until": ("Until", "有效期至"),
    "software.enabled": ("Enabled", "已启用"),
    "software.disabled": ("Not enabled", "未启用"),
    "software.perpetual": ("No end", "永久"),
    "software.help": ("An optional feature is enabled only while the Basic Edition is active.", "可选功能仅在基础版有效期内启用。"),
    "services.title": ("Services", "服务"),
    "services.id": ("Service", "服务"),
    "services.detail": ("Details", "详情"),
    "services.purchased": ("Purchased", "购买日期"),
    "services.accept_by": ("Accept by", "验收截止"),
    "services.ends": ("Ends", "结束"),
    "services.action": ("Action", "操作"),
    "services.accept": ("Accept", "确认验收"),
    "services.accept_label": ("Accept service {id}", "确认验收服务 {id}"),
    "services.accepted_now": ("Service {id} accepted.", "服务 {id} 已验收。"),
    "services.person_days": ("{n} person-days", "{n} 人天"),
    "services.none": ("No services yet.", "暂无服务。"),
    "services.status.awaiting_acceptance": ("Awaiting acceptance", "待验收"),
    "services.status.accepted": ("Accepted", "已验收"),
    "services.status.expired": ("Expired", "已过期"),
    "services.status.active": ("Active", "服务中"),
    "services.status.ended": ("Ended", "已结束"),
    "mode.local": ("Local", "本地"),
    "mode.remote": ("Remote", "远程"),
    "orders.title": ("Orders", "订单"),
    "orders.id": ("Order", "订单号"),
    "orders.placed": ("Placed", "下单日期"),
    "orders.lines": ("Products", "产品"),
    "orders.total": ("Total", "总额"),
    "orders.none": ("No orders yet.", "暂无订单。"),
    "orders.more": ("Older orders", "更早的订单"),
    "orders.status.placed": ("Awaiting payment", "待付款"),
    "order.overdue": ("Credit overdue", "入账逾期"),
    "order.overdue_help": ("Paid but not yet credited, though credit was due by {due} UTC. Operators have been alerted; please contact support if it persists.", "已付款但尚未入账，应于 {due}（UTC）前入账。运维人员已收到告警；如持续未入账请联系客服。"),
    "orders.status.paid": ("Paid, being credited", "已付款，入账中"),
    "orders.status.fulfilled": ("Credited", "已入账"),
    "orders.status.cancelled": ("Cancelled", "已取消"),
    "order.title": ("Order", "订单"),
    "order.placed_now": ("Your order was placed. It is awaiting payment.", "订单已提交，等待付款。"),
    "order.awaiting_payment_help": ("Once the payment is confirmed, the purchase is credited within seconds.", "付款确认后，所购内容将在数秒内入账。"),
    "order.choices": ("Choices", "选项"),
    "order.price": ("Price", "价格"),
    "order.book": ("Price book {version}.", "价目表 {version}。"),
    "order.back": ("All orders", "全部订单"),
    "order.cancel": ("Cancel this order", "取消该订单"),
    "order.cancelled_now": ("The order was cancelled.", "订单已取消。"),
    "buy.resources.title": ("Buy resources", "购买资源"),
    "buy.software.title": ("Buy software", "购买软件"),
    "buy.services.title": ("Buy services", "购买服务"),
    "buy.software.form": ("Basic Edition and optional features", "基础版与可选功能"),
    "buy.intro": ("Prices from price book {version}, in USD. The price updates as you choose; \"Show price\" works without JavaScript.", "价格来自价目表 {version}，以美元计。价格随选择即时更新；“计算价格”按钮无需 JavaScript。"),
    "buy.price": ("Price", "价格"),
    "buy.no_price": ("—", "—"),
    "buy.show_price": ("Show price", "计算价格"),
    "buy.place": ("Place order", "提交订单"),
    "buy.range": ("From {min} to {max}.", "范围 {min} 至 {max}。"),
    "buy.step": ("In steps of {n}.", "以 {n} 为单位。"),
    "buy.include_basic": ("Basic Edition ({price} USD per month)", "基础版（每月 {price} 美元）"),
    "buy.optional_features": ("Optional features", "可选功能"),
    "buy.features_need_basic": ("Optional features need an active Basic Edition, or the Basic Edition in the same order.", "可选功能需要基础版处于有效期内，或在同一订单中购买基础版。"),
    "buy.per_month": ("{price} USD per month", "每月 {price} 美元"),
    "buy.unit_price": ("{price} USD per {unit}", "每{unit} {price} 美元"),
    "buy.line_prefix": ("Line {n} ({what}):", "第 {n} 行（{what}）："),
    "hint.whole_number": ("{field}: enter a whole number.", "{field}：请输入整数。"),
    "hint.one_of": ("{field} must be one of {choices}.", "{field}必须是以下之一：{choices}。"),
    "hint.min": ("{field} must be at least {n}.", "{field}不能少于 {n}。"),
    "hint.max": ("{field} must be at most {n}.", "{field}不能超过 {n}。"),
    "hint.multiple": ("{field} must be a multiple of {n}.", "{field}必须是 {n} 的整数倍。"),
    "hint.nothing_chosen": ("Choose the Basic Edition or at least one optional feature.", "请选择基础版或至少一个可选功能。"),
    "field.quantity": ("Quantity", "数量"),
    "field.storage_years": ("Storage years", "存储年限"),
    "field.months": ("Months", "月数"),
    "field.feature": ("Feature", "功能"),
    "field.mode": ("Delivery mode", "交付方式"),
    "field.years": ("Years", "年数"),
    "agreement.title": ("The cooperation agreement comes first", "请先签署合作协议"),
    "agreement.body1": ("The platform includes software-based medical devices. Before an organisation's first order, its signed offline cooperation agreement must be recorded.", "本平台包含软件类医疗器械。机构首次下单前，必须登记其已签署的线下合作协议。"),
    "agreement.body2": ("Please contact our sales staff to sign the agreement offline. Once they have recorded it, this page shows the order forms.", "请联系我们的销售人员线下签署协议。协议登记后，本页面将显示下单表单。"),
    "agreement.body3": ("Until then no order can be placed, and usage reported for this organisation is not billed.", "在此之前无法下单，该机构上报的用量也不会计费。"),
    "agreement.record_link": ("Record this organisation's agreement (operations)", "登记该机构的协议（运营）"),
    "ops.title": ("Operations", "运营"),
    "ops.find": ("Find an organisation", "查找机构"),
    "ops.org_id": ("Organisation id", "机构编号"),
    "ops.open": ("Open", "打开"),
    "ops.bad_org": ("An organisation id is 1 to 64 letters, digits, dots, underscores or hyphens.", "机构编号为 1 至 64 个字母、数字、点、下划线或连字符。"),
    "ops.agreement": ("Record a cooperation agreement", "登记合作协议"),
    "ops.agreement_ref": ("Agreement reference", "协议编号"),
    "ops.signed_at": ("Signed on", "签署日期"),
    "ops.record": ("Record agreement", "登记协议"),
    "ops.agreement_done": ("Agreement recorded for {org}.", "已为 {org} 登记协议。"),
    "ops.confirm_payment": ("Confirm a payment", "确认付款"),
    "ops.amount": ("Amount (USD)", "金额（美元）"),
    "ops.amount_help": ("Leave empty to use the order's total.", "留空则使用订单总额。"),
    "ops.payment_ref": ("Payment reference", "付款凭证号"),
    "ops.confirm": ("Confirm payment", "确认付款"),
    "ops.payment_done": ("Payment of order {order_id} confirmed ({total} USD).", "订单 {order_id} 的付款已确认（{total} 美元）。"),
    "ops.import": ("Import an offline order", "录入线下订单"),
    "ops.import_help": ("A sales-assisted purchase: placed and paid in one step on the payment date. Fill the fields the product takes.", "销售协助的购买：在付款日期一步完成下单和付款。请填写该产品所需的字段。"),
    "ops.paid_at": ("Paid on", "付款日期"),
    "ops.import_button": ("Import order", "录入订单"),
    "ops.import_done": ("Order {order_id} imported ({total} USD).", "订单 {order_id} 已录入（{total} 美元）。"),
    "ops.fill_all": ("Please fill in every required field.", "请填写所有必填字段。"),
    "ops.health": ("Delivery health", "投递健康状况"),
    "ops.parked": ("Parked outbox rows", "搁置的发件箱记录"),
    "ops.dead_letters": ("Dead letters", "死信"),
    "ops.service": ("Service", "服务"),
    "ops.parked_rows": ("Parked rows", "搁置记录"),
    "ops.dead_letter_counts": ("Count by topic and reason", "按主题和原因计数"),
    "ops.none": ("None", "无"),
    "ops.not_available": ("Not available from this service yet ({reason})", "该服务暂未提供（{reason}）"),
    "ops.parked_reason": ("Reason (kept with the decision)", "原因（随处理记录保存）"),
    "ops.republish": ("Re-publish", "重新发布"),
    "ops.discard": ("Discard", "丢弃"),
    "ops.parked_admin_only": ("Only an admin can re-publish or discard a parked row.", "只有管理员可以重新发布或丢弃搁置记录。"),
    "ops.parked_reason_needed": ("Give a reason: it is kept with the decision.", "请填写原因：它会随处理记录保存。"),
    "ops.parked_republish_done": ("Row {seq} of {service} will be published again ({event_id}).", "{service} 的记录 {seq} 将重新发布（{event_id}）。"),
    "ops.parked_discard_done": ("Row {seq} of {service} discarded ({event_id}); it will not be published.", "{service} 的记录 {seq} 已丢弃（{event_id}），不会再发布。"),
    "ops.health_help": ("Parked rows come from GET /v1/admin/outbox/parked and dead letters from aimis_dead_letters_total on each service's /metrics.", "搁置记录来自各服务的 GET /v1/admin/outbox/parked，死信来自各服务 /metrics 中的 aimis_dead_letters_total。"),
}

_EN: dict[str, str] = {k: en for k, (en, _) in MESSAGES.items()}
_ZH: dict[str, str] = {k: zh for k, (_, zh) in MESSAGES.items()}

for _k, (_en, _zh) in FEATURES.items():
    _EN[f"feature.{_k}"], _ZH[f"feature.{_k}"] = _en, _zh
for _k, (_en, _zh, _den, _dzh) in SKUS.items():
    _EN[f"sku.{_k}"], _ZH[f"sku.{_k}"] = _en, _zh
    _EN[f"sku.{_k}.desc"], _ZH[f"sku.{_k}.desc"] = _den, _dzh
for _k, (_en, _zh) in UNITS.items():
    _EN[f"unit.{_k}"], _ZH[f"unit.{_k}"] = _en, _zh
for _k, (_en, _zh) in ERRORS.items():
    _EN[f"error.{_k}"], _ZH[f"error.{_k}"] = _en, _zh

CATALOG: dict[str, dict[str, str]] = {"en": _EN, "zh-CN": _ZH}


def t(lang: str, key: str, **params: Any) -> str:
    """The message in `lang`; the key itself when missing (a test keeps that from happening)."""
    if params.get("n") == 1 and f"{key}.one" in _EN:  # the singular, where the language has one
        key = f"{key}.one"
    text = CATALOG.get(lang, _EN).get(key) or _EN.get(key) or key
    if params:
        try:
            return text.format(**params)
        except (KeyError, IndexError, ValueError):
            return text
    return text


def has(key: str) -> bool:
    return key in _EN


def error_sentence(lang: str, code: str, fallback: str) -> str:
    """The sentence for a service's error code; its own message for a code this console does not know."""
    key = f"error.{code}"
    return t(lang, key) if has(key) else fallback


def from_accept_language(header: str) -> str:
    """zh-CN when the browser prefers any Chinese over English, else English."""
    best, best_q = DEFAULT, 0.0
    for part in header.split(","):
        tag, _, params = part.strip().partition(";")
        tag = tag.strip().lower()
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        lang = "zh-CN" if tag.startswith("zh") else "en" if tag.startswith("en") else None
        if lang and q > best_q:
            best, best_q = lang, q
    return best
