/** The ID-JAG token-endpoint guard (SPEC section 8). */
export { createIdJagHandler, ID_JAG_ACTION, type IdJagDeps, type MissionStateLookup } from './guard.js';
export { BUILTIN_FORBIDDEN_CLAIMS, checkProjection, compileRules, IdJagRejection, ID_JAG_TYP, type IdJagReason, type Projection, type ProjectionRules } from './projection.js';
export { classifyTokenRequest, declaresIdJag, GRANT_JWT_BEARER, type TokenRequest } from './request.js';
