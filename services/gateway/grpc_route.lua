-- skmaker gateway, HAProxy data plane: the sample fetch `lua.skmaker_endpoint`.
--
-- It returns field 1 of the first gRPC message of the request body (Predict's endpoint_name,
-- ModelInfer's model_name, ModelReady's and ModelMetadata's name), read the way
-- services/gateway/wire.py reads it: walk the top-level fields, skip each by its length,
-- the last field 1 wins. The gateway's configuration asks HAProxy's own `ungrpc` first and
-- this only for a message larger than HAProxy's buffer. It returns nothing (the call then goes to the Python gateway, which
-- answers it or explains what is wrong) for a compressed message or bytes that are not a
-- valid protobuf message. Lua 5.3 or later (integer bit
-- operations).

local function varint(data, pos, stop)
  local result, shift = 0, 0
  while pos <= stop do
    local byte = data:byte(pos)
    pos = pos + 1
    result = result | ((byte & 0x7f) << shift)
    if byte < 0x80 then
      return result, pos
    end
    shift = shift + 7
    if shift >= 64 then
      return nil
    end
  end
  return nil
end

local function endpoint_of(body)
  -- The gRPC message header: 1 byte compressed flag, 4 bytes big-endian length.
  if body == nil or #body < 5 or body:byte(1) ~= 0 then
    return nil
  end
  local b2, b3, b4, b5 = body:byte(2, 5)
  local stop = 5 + ((b2 << 24) | (b3 << 16) | (b4 << 8) | b5)
  -- A message larger than HAProxy's buffer is only partly here: its first fields are read
  -- (serializers write fields in number order, so field 1 comes first) and the first field 1
  -- found is taken.
  local complete = stop <= #body
  if not complete then
    stop = #body
  end
  local pos, found = 6, nil
  while pos <= stop do
    local key
    key, pos = varint(body, pos, stop)
    if key == nil then
      return nil
    end
    local wire_type = key & 7
    if wire_type == 2 then
      local length
      length, pos = varint(body, pos, stop)
      if length == nil or pos + length - 1 > stop then
        return nil
      end
      if key >> 3 == 1 then
        found = body:sub(pos, pos + length - 1)
        if not complete then
          return found
        end
      end
      pos = pos + length
    elseif wire_type == 0 then
      local _
      _, pos = varint(body, pos, stop)
      if pos == nil then
        return nil
      end
    elseif wire_type == 1 then
      pos = pos + 8
    elseif wire_type == 5 then
      pos = pos + 4
    else
      return nil
    end
  end
  if complete and pos ~= stop + 1 then
    return nil
  end
  return found
end

core.register_fetches("skmaker_endpoint", function(txn)
  return endpoint_of(txn.sf:req_body())
end)

-- The HTTP service `lua.skmaker_too_large`: the answer to a call whose first message is over
-- the gateway's limit, RESOURCE_EXHAUSTED with the text the configuration put in
-- `txn.message_refusal`. It reads the rest of the request and drops it first: HAProxy resets
-- (RST_STREAM CANCEL) a stream whose answer is complete while its request is still arriving,
-- and the caller would see CANCELLED instead of the answer.
core.register_service("skmaker_too_large", "http", function(applet)
  repeat
    local chunk = applet:receive(65536)
  until chunk == nil or #chunk == 0
  applet:set_status(200)
  applet:add_header("content-type", "application/grpc")
  applet:add_header("grpc-status", "8")
  applet:add_header("grpc-message", applet:get_var("txn.message_refusal") or "")
  applet:start_response()
end)
