--[[
quarto.lua: an emulation of the part of Quarto's built-in Lua filters that this
course's sources use, for plain pandoc (the Quarto-free render path). It emulates
only what Quarto itself does; what the course adds (notes and pauses outside decks,
the macro file's raw blocks, solutions as notebook cells, the handout's style) is in
the project filter filters/course.lua, which runs before this one, as under Quarto.

It runs BEFORE citeproc and handles, for the target format given in the
metadata field `coursebuild-format` (revealjs, typst, html or ipynb):
  * conditional content: .content-visible / .content-hidden with
    when-format / unless-format (Quarto's format matching: "html" also
    matches revealjs);
  * incremental lists outside revealjs (unwrapped);
  * callouts (.callout-note, -tip, -warning, -important, -caution), with
    collapse="true" folding (a <details> element in HTML);
  * cross-references @fig-, @eq-, @sec-, @tbl-: targets are numbered and
    references become "Figure 2", "Equation (3)", "Section 1.2"; an unknown
    identifier stops the build ("unknown cross-reference");
  * equation labels `$$ ... $$ {#eq-x}`;
  * columns in Typst (a grid) and figure alt text in Typst;
  * links to the project's .qmd sources, resolved to their .html outputs.
Errors are raised with error(), which makes pandoc exit non-zero; the
Python driver maps the message back to the source file and line.
]]

local fmt = "html"
local KINDS = { fig = "Figure", eq = "Equation", sec = "Section", tbl = "Table" }

local function is_html_like()
  return fmt == "html" or fmt == "revealjs"
end

-- Quarto's format aliases: which names a `when-format` value matches.
local function format_matches(name)
  if name == fmt then return true end
  if name == "html" or name == "html:js" then return is_html_like() end
  if name == "markdown" then return fmt == "ipynb" end
  return false
end

local function any_matches(value)
  for name in value:gmatch("[^%s,]+") do
    if format_matches(name) then return true end
  end
  return false
end

local function stringify(x) return pandoc.utils.stringify(x) end

------------------------------------------------------------------------
-- pass 1: metadata
------------------------------------------------------------------------
local function read_meta(meta)
  if meta["coursebuild-format"] then
    fmt = stringify(meta["coursebuild-format"])
  end
end

------------------------------------------------------------------------
-- pass 2: conditional content
------------------------------------------------------------------------
local function conditional(div)
  local cls = div.classes
  if cls:includes("content-visible") or cls:includes("content-hidden") then
    local when = div.attributes["when-format"]
    local unless = div.attributes["unless-format"]
    local visible = true
    if when then visible = any_matches(when) end
    if unless then visible = visible and not any_matches(unless) end
    if cls:includes("content-hidden") then
      if when or unless then visible = not visible else visible = false end
    end
    if visible then return div.content else return {} end
  end
  if fmt ~= "revealjs" and (cls:includes("incremental") or cls:includes("nonincremental")) then
    return div.content
  end
  return nil
end

------------------------------------------------------------------------
-- pass 3: equation labels  `$$ ... $$ {#eq-x}`
------------------------------------------------------------------------
local function label_equations(para)
  -- pandoc reads the label as literal text after the display math
  local c = para.content
  local out = pandoc.Inlines({})
  local changed = false
  local i = 1
  while i <= #c do
    local el = c[i]
    if el.t == "Math" and el.mathtype == "DisplayMath" then
      local j = i + 1
      while j <= #c and (c[j].t == "Space" or c[j].t == "SoftBreak") do j = j + 1 end
      if j <= #c and c[j].t == "Str" then
        local id = c[j].text:match("^{#(eq%-[%w%-_:]+)}$")
        if id then
          out:insert(pandoc.Span({ el }, pandoc.Attr(id, { "equation" })))
          i = j + 1
          changed = true
          goto continue
        end
      end
    end
    out:insert(el)
    i = i + 1
    ::continue::
  end
  if changed then
    para.content = out
    return para
  end
  return nil
end

------------------------------------------------------------------------
-- pass 4: number the targets
------------------------------------------------------------------------
local targets = {}   -- id -> { kind = "fig", number = "2" }
local section_counters = {}

local function number_targets(doc)
  local nfig, neq, ntbl = 0, 0, 0
  doc:walk({
    traverse = "topdown",
    Header = function(h)
      if h.classes:includes("unnumbered") then return nil end
      local level = h.level
      for l = level + 1, 6 do section_counters[l] = 0 end
      section_counters[level] = (section_counters[level] or 0) + 1
      local parts = {}
      for l = 1, level do parts[#parts + 1] = tostring(section_counters[l] or 0) end
      if h.identifier:match("^sec%-") then
        targets[h.identifier] = { kind = "sec", number = table.concat(parts, ".") }
      end
    end,
    Figure = function(f)
      if f.identifier:match("^fig%-") then
        nfig = nfig + 1
        targets[f.identifier] = { kind = "fig", number = tostring(nfig) }
      end
    end,
    Table = function(t)
      if t.identifier and t.identifier:match("^tbl%-") then
        ntbl = ntbl + 1
        targets[t.identifier] = { kind = "tbl", number = tostring(ntbl) }
      end
    end,
    Span = function(s)
      if s.classes:includes("equation") and s.identifier:match("^eq%-") then
        neq = neq + 1
        targets[s.identifier] = { kind = "eq", number = tostring(neq) }
      end
    end,
  })
end

------------------------------------------------------------------------
-- pass 5: render targets and references per format
------------------------------------------------------------------------
local function typst_math(tex)
  -- let pandoc's own TeX -> Typst math conversion do the work
  local out = pandoc.write(pandoc.Pandoc({ pandoc.Plain({ pandoc.Math("DisplayMath", tex) }) }), "typst")
  return out:gsub("%s+$", "")
end

local function typst_inlines(inlines)
  local out = pandoc.write(pandoc.Pandoc({ pandoc.Plain(inlines) }), "typst")
  return out:gsub("%s+$", "")
end

local function typst_string(s)
  return '"' .. s:gsub("\\", "\\\\"):gsub('"', '\\"') .. '"'
end

local function render_equation(span)
  if not span.classes:includes("equation") then return nil end
  local t = targets[span.identifier]
  local math = span.content[1]
  if fmt == "typst" then
    local m = typst_math(math.text)
    -- `$ ... $.body` is the equation's content; wrap it in a numbered equation
    return pandoc.RawInline("typst",
      "#math.equation(block: true, numbering: \"(1)\", " .. m .. ".body) <" .. span.identifier .. ">")
  end
  if fmt == "ipynb" then
    return pandoc.Math("DisplayMath", math.text .. " \\tag{" .. t.number .. "}")
  end
  span.content = { pandoc.Math("DisplayMath", math.text .. " \\tag{" .. t.number .. "}") }
  return span
end

local function render_figure(fig)
  local t = targets[fig.identifier]
  if not t then return nil end
  if fmt == "typst" then
    local img
    fig:walk({ Image = function(i) img = i end })
    if not img then return nil end
    local alt = img.attributes["fig-alt"] or stringify(img.caption)
    local width = img.attributes["width"] or "100%"
    local caption = typst_inlines(pandoc.utils.blocks_to_inlines(fig.caption.long))
    return pandoc.RawBlock("typst",
      "#figure(image(" .. typst_string(img.src) .. ", width: " .. width .. ", alt: " .. typst_string(alt) ..
      "), caption: [" .. caption .. "]) <" .. fig.identifier .. ">\n")
  end
  -- HTML-like and ipynb: number the caption, alt text on the <img>
  local prefix = pandoc.Inlines({ pandoc.Str("Figure"), pandoc.Space(), pandoc.Str(t.number .. ":"), pandoc.Space() })
  if #fig.caption.long > 0 and fig.caption.long[1].content then
    local first = fig.caption.long[1]
    first.content = prefix .. first.content
  end
  fig = fig:walk({
    Image = function(i)
      if i.attributes["fig-alt"] then
        i.attributes["alt"] = i.attributes["fig-alt"]
        i.attributes["fig-alt"] = nil
      end
      return i
    end,
  })
  return fig
end

local function xref_inline(id)
  local t = targets[id]
  if not t then
    error("unknown cross-reference @" .. id)
  end
  if fmt == "typst" then
    return pandoc.RawInline("typst", "#ref(<" .. id .. ">)")
  end
  local text
  if t.kind == "eq" then
    text = KINDS[t.kind] .. "\u{a0}(" .. t.number .. ")"
  else
    text = KINDS[t.kind] .. "\u{a0}" .. t.number
  end
  if fmt == "html" then
    return pandoc.Link(text, "#" .. id, "", pandoc.Attr("", { "quarto-xref" }))
  end
  return pandoc.Span(text, pandoc.Attr("", { "quarto-xref" }))
end

local function is_xref_id(id)
  local prefix = id:match("^(%a+)%-")
  return prefix ~= nil and KINDS[prefix] ~= nil
end

local function render_cite(cite)
  local xrefs, others = {}, {}
  for _, c in ipairs(cite.citations) do
    if is_xref_id(c.id) then xrefs[#xrefs + 1] = c else others[#others + 1] = c end
  end
  if #xrefs == 0 then return nil end
  local out = pandoc.Inlines({})
  for k, c in ipairs(xrefs) do
    if k > 1 then out:insert(pandoc.Str(",")); out:insert(pandoc.Space()) end
    out:extend(c.prefix)
    if #c.prefix > 0 then out:insert(pandoc.Space()) end
    out:insert(xref_inline(c.id))
    out:extend(c.suffix)
  end
  if #others > 0 then
    -- `@fig-x [@key]` is read by pandoc as one citation group: split it again
    for _, c in ipairs(others) do c.mode = "NormalCitation" end
    out:insert(pandoc.Space())
    out:insert(pandoc.Cite({}, others))
  end
  return out
end

------------------------------------------------------------------------
-- pass 6: callouts and columns
------------------------------------------------------------------------
local CALLOUT_TITLES = {
  note = "Note", tip = "Tip", warning = "Warning", important = "Important", caution = "Caution",
}
-- Quarto's own callout colours (icon/title colour and background), so that a handout made here
-- looks like Quarto's: quarto-cli src/resources/filters/modules/constants.lua (kColorNote ...,
-- kBackgroundColorNote ...), used by src/resources/filters/customnodes/callout.lua for Typst.
local CALLOUT_COLORS = {
  note = "#0758E5", tip = "#00A047", warning = "#EB9113", important = "#CC1914", caution = "#FC5300",
}
local CALLOUT_BACKGROUNDS = {
  note = "#dae6fb", tip = "#ccf1e3", warning = "#fcefdc", important = "#f7dddc", caution = "#ffe5d0",
}

local function callout_kind(div)
  for _, c in ipairs(div.classes) do
    local k = c:match("^callout%-(%a+)$")
    if k and CALLOUT_TITLES[k] then return k end
  end
  return nil
end

local function render_callout(div)
  local kind = callout_kind(div)
  if not kind then return nil end
  local content = pandoc.Blocks(div.content)
  local title = div.attributes["title"] and pandoc.Inlines(pandoc.read(div.attributes["title"], "markdown").blocks[1].content) or nil
  if not title and #content > 0 and content[1].t == "Header" then
    title = content[1].content
    content:remove(1)
  end
  title = title or pandoc.Inlines({ pandoc.Str(CALLOUT_TITLES[kind]) })
  local collapse = div.attributes["collapse"] == "true"

  if fmt == "typst" then
    local out = pandoc.Blocks({})
    out:insert(pandoc.RawBlock("typst",
      "#block(width: 100%, inset: (x: 10pt, y: 8pt), radius: 3pt, fill: rgb(\"" ..
      CALLOUT_BACKGROUNDS[kind] .. "\"), stroke: (left: 3pt + rgb(\"" .. CALLOUT_COLORS[kind] ..
      "\")))[\n#block(below: 0.7em)[#text(weight: \"bold\", fill: rgb(\"" .. CALLOUT_COLORS[kind] .. "\"))[" .. typst_inlines(title) .. "]]\n"))
    out:extend(content)
    out:insert(pandoc.RawBlock("typst", "]"))
    return out
  end
  -- HTML and reveal.js
  local classes = { "callout", "callout-" .. kind }
  if collapse and fmt == "html" then
    local out = pandoc.Blocks({})
    out:insert(pandoc.RawBlock("html", "<details class=\"callout callout-" .. kind .. "\">\n<summary>"))
    out:insert(pandoc.Plain(title))
    out:insert(pandoc.RawBlock("html", "</summary>\n<div class=\"callout-body\">"))
    out:extend(content)
    out:insert(pandoc.RawBlock("html", "</div>\n</details>"))
    return out
  end
  local body = pandoc.Blocks({ pandoc.Div(pandoc.Plain(title), pandoc.Attr("", { "callout-title" })) })
  body:insert(pandoc.Div(content, pandoc.Attr("", { "callout-body" })))
  return pandoc.Div(body, pandoc.Attr(div.identifier, classes))
end

-- The bibliography of a handout is set a size smaller, as in printed notes.
local function render_refs(div)
  if fmt ~= "typst" or div.identifier ~= "refs" then return nil end
  -- citeproc fills the Div after this filter: wrap the Div, not its content
  return pandoc.Blocks({
    pandoc.RawBlock("typst", "#[#set text(size: 0.85em)\n#set par(justify: false)"),
    div,
    pandoc.RawBlock("typst", "]"),
  })
end

local function render_columns(div)
  if fmt ~= "typst" or not div.classes:includes("columns") then return nil end
  local cols = {}
  local widths = {}
  for _, b in ipairs(div.content) do
    if b.t == "Div" and b.classes:includes("column") then
      cols[#cols + 1] = b
      local w = b.attributes["width"]
      widths[#widths + 1] = w and (tonumber((w:gsub("%%", ""))) or 50) or 50
    end
  end
  if #cols == 0 then return div.content end
  local spec = {}
  for i, w in ipairs(widths) do spec[i] = tostring(w) .. "fr" end
  local out = pandoc.Blocks({ pandoc.RawBlock("typst",
    "#grid(columns: (" .. table.concat(spec, ", ") .. ",), column-gutter: 1.2em,") })
  for i, c in ipairs(cols) do
    out:insert(pandoc.RawBlock("typst", "["))
    out:extend(c.content)
    out:insert(pandoc.RawBlock("typst", "],"))
  end
  out:insert(pandoc.RawBlock("typst", ")"))
  return out
end

------------------------------------------------------------------------
-- links between the project's sources: `page.qmd#x` -> `page.html#x`
------------------------------------------------------------------------
-- Quarto resolves links to .qmd files of the project to their HTML output
-- (https://quarto.org/docs/websites/#linking).
local function resolve_qmd_link(link)
  if fmt ~= "html" and fmt ~= "revealjs" then return nil end
  if link.target:match("^%a[%w+.-]*:") then return nil end  -- an absolute URL
  local path, anchor = link.target:match("^([^#]-)%.qmd(#?.*)$")
  if path then
    link.target = path .. ".html" .. anchor
    return link
  end
  return nil
end

------------------------------------------------------------------------
return {
  { Meta = read_meta },
  { Link = resolve_qmd_link },
  { Div = conditional },
  { Para = label_equations, Plain = label_equations },
  { Pandoc = function(doc) number_targets(doc); return nil end },
  { Span = render_equation, Figure = render_figure, Cite = render_cite },
  { Div = render_columns },
  { Div = render_refs },
  { Div = render_callout },
}
