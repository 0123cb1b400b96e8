"""Who is calling: principals, issued tokens, OIDC JWTs and their keys."""
