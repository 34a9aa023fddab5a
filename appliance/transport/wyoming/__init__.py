"""Wyoming transport (Home Assistant's voice protocol): the TCP server and one handler per connection."""
