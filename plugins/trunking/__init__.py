"""SIP trunking features: vendor connections and what the switch does with them."""
