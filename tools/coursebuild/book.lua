--[[
book.lua: the course book's structure (tools/coursebuild/book.py), run before the project's
filters and the emulation of Quarto's built-ins.

Each week arrives as a Div of class `book-chapter` with attributes `week` and `title`. The Div
becomes a chapter: a level-1 heading numbered by the week (the heading counter is set to
week - 1 first, so a missing week does not renumber the rest), then the week's own headings one
level down. Each week's reference list is dropped; one bibliography closes the book. The Typst
preamble numbers equations and figures within chapters: (8.3) is equation 3 of week 8.
]]

local PREAMBLE = [[
#let course-chapter() = counter(heading).get().first()
#let course-eq-numbering = (..n) => numbering("(1.1)", course-chapter(), ..n)
#set figure(numbering: n => numbering("1.1", course-chapter(), n))
#show heading.where(level: 1): it => {
  counter(math.equation).update(0)
  counter(figure.where(kind: image)).update(0)
  counter(figure.where(kind: table)).update(0)
  pagebreak(weak: true)
  it
}
]]

local function is_references(block)
  return block.t == "Header" and block.classes:includes("unnumbered")
    and pandoc.utils.stringify(block) == "References"
end

local function chapter(div)
  if not div.classes:includes("book-chapter") then return nil end
  local week = tonumber(div.attributes["week"])
  local out = pandoc.Blocks({
    pandoc.RawBlock("typst", "#counter(heading).update(" .. (week - 1) .. ")"),
    pandoc.Header(1, div.attributes["title"], pandoc.Attr("week-" .. string.format("%02d", week))),
  })
  for _, b in ipairs(div.content) do
    if not (is_references(b) or (b.t == "Div" and b.identifier == "refs")) then
      out:insert(b)
    end
  end
  return out:walk({
    Header = function(h)
      if h.identifier:match("^week%-%d%d$") then return nil end
      h.level = h.level + 1
      return h
    end,
  })
end

local function book(doc)
  doc.blocks:insert(1, pandoc.RawBlock("typst", PREAMBLE))
  doc.blocks:insert(pandoc.Header(1, "References", pandoc.Attr("references", { "unnumbered" })))
  doc.blocks:insert(pandoc.Div({}, pandoc.Attr("refs")))
  return doc
end

return {
  { Div = chapter },
  { Pandoc = book },
}
