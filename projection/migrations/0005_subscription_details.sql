-- Subscription details the storefront attached to a cart, as the JSON object the API shows
-- (`{"<id>": {"id", "offeringCode", "signingType", "data"}}`); NULL while there are none.
ALTER TABLE carts ADD COLUMN subscription_details TEXT;
