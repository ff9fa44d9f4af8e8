export { compilePlan, durationBucketIndex, priceOfTool, PlanCompileError, type CompiledPlan, type ToolPrice } from './compile.js';
export { countsAsCall, EVENT_DIMENSIONS, rateEvent, type EventDimension, type EventRating, type RatingInput } from './rate-event.js';
export { mergeRows, PeriodUsage, usageRows, usageRowsForRun, type CallPosition, type RatedUsage, type RowKind, type UsageRow } from './usage-rows.js';
export { ratePeriod, RatingError, ROUNDING_RULE, STEPS, type Invoice, type InvoiceLine, type LineCode, type SubscriptionPeriod } from './rate-period.js';
export { invoiceJson, parseQuoteRequest, quote, usageVectorSchema, type CallGroup, type Quote, type QuoteRequest, type UsageVector } from './quote.js';
