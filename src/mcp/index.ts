/** MCP Streamable HTTP enforcement (SPEC section 7): the handler the pipeline hands the MCP path to. */
export { createMcpHandler, type McpHandlerDeps, type MissionLookup } from './handler.js';
export { sourceDigest } from './tools.js';
